package compose

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"sort"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/docker/compose/v5/pkg/api"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/berth-dev/berth/source/mirror"
)

// imageChoice is the local reference a service runs: present in the
// engine, with the digest of the reference written in the compose file.
type imageChoice struct {
	ref    string // what the service's image: becomes for Up
	mirror string // the mirror it came from; "" for the image's own registry
}

// ensureImages makes every image of the project present in the engine,
// pulling what is missing through the registry mirrors (see pull), and
// points each service at the reference that is present.
//
// The written reference may be present under several names: as written
// (pulled from its own registry, or before mirrors were configured), or
// rewritten to any mirror that served it. Any of them counts as present,
// and is then not pulled again: the reference the service's containers
// already run first, so that a container is never recreated because
// another copy of the same digest is also present, then the endpoints in
// order (Options.Mirrors), the written reference last. The written reference
// counts even when the source registry is not an endpoint (sourceFallback
// off): pinned, it is the same content. Last, an image loaded from a
// bundle counts under its BundleTag, which names the same digest.
//
// The service's image: is rewritten to that reference, and LabelImageMirror
// set to its mirror, after load computed LabelConfigHash from the written
// reference: which mirror served an image never changes berth's hash. Only
// Compose's own configuration hash sees the rewritten reference, so a
// container is recreated only when the reference present changes, that is
// when its image had to be pulled anew through another endpoint.
func (a *Applier) ensureImages(ctx context.Context, p *types.Project) error {
	names := p.ServiceNames()
	sort.Strings(names)
	// The reference each service runs now is preferred among the
	// candidates (mirrors, the written reference, a bundle's tag).
	running := a.runningImages(ctx, p.Name)
	chosen := map[string]imageChoice{} // by written reference
	for _, name := range names {
		s := p.Services[name]
		ref := s.Image
		c, ok := chosen[ref]
		if !ok || (running[name] != "" && running[name] != c.ref) {
			var err error
			c, err = a.ensureImage(ctx, ref, running[name])
			if err != nil {
				return fmt.Errorf("service %q: %w", name, err)
			}
			if !ok {
				chosen[ref] = c
			}
		}
		s.Image = c.ref
		if c.mirror != "" {
			if s.CustomLabels == nil {
				s.CustomLabels = types.Labels{}
			}
			s.CustomLabels[LabelImageMirror] = c.mirror
		}
		p.Services[name] = s
	}
	return nil
}

// runningImages returns, by service, the image reference that the
// project's containers were created with; best effort: nothing when the
// engine does not answer (ensureImage then fails with the reason).
func (a *Applier) runningImages(ctx context.Context, project string) map[string]string {
	out := map[string]string{}
	f := make(client.Filters).Add("label", api.ProjectLabel+"="+project).Add("label", api.OneoffLabel+"=False")
	res, err := a.docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return out
	}
	for _, c := range res.Items {
		if svc := c.Labels[api.ServiceLabel]; svc != "" && out[svc] == "" {
			out[svc] = c.Image
		}
	}
	return out
}

// ensureImage returns the local reference to run for the written
// reference ref, pulling it when no candidate is present (see
// ensureImages). prefer is the reference the service's containers run,
// "" when none.
func (a *Applier) ensureImage(ctx context.Context, ref, prefer string) (imageChoice, error) {
	eps, resolveErr := a.mirrors.Resolve(ref)
	var cands []imageChoice
	add := func(c imageChoice) {
		for _, x := range cands {
			if x.ref == c.ref {
				return
			}
		}
		cands = append(cands, c)
	}
	for _, ep := range eps {
		add(localChoice(ref, ep))
	}
	add(imageChoice{ref: ref})
	if c, ok := bundleChoice(ref); ok {
		add(c) // loaded from a bundle (bundle.go): it has no RepoDigests
	}
	if i := slices.IndexFunc(cands, func(c imageChoice) bool { return c.ref == prefer }); i > 0 {
		c := cands[i]
		cands = slices.Insert(slices.Delete(cands, i, i+1), 0, c)
	}
	for _, c := range cands {
		_, err := a.docker.ImageInspect(ctx, c.ref)
		if err == nil {
			return c, nil
		}
		if !cerrdefs.IsNotFound(err) {
			return imageChoice{}, fmt.Errorf("inspect image %s on the docker engine %s: %w", c.ref, a.opts.Host, err)
		}
	}
	if resolveErr != nil {
		return imageChoice{}, fmt.Errorf("pull %s: %w", ref, resolveErr)
	}
	ep, err := a.pull(ctx, ref)
	if err != nil {
		return imageChoice{}, err
	}
	return localChoice(ref, ep), nil
}

// localChoice is the reference an endpoint's pull leaves in the engine: the
// mirror's reference, or for the source the reference as written (which is
// what the service ran before mirrors, and Compose hashes).
func localChoice(ref string, ep mirror.Endpoint) imageChoice {
	if ep.Mirror == "" {
		return imageChoice{ref: ref}
	}
	return imageChoice{ref: ep.Ref, mirror: ep.Mirror}
}

// pull fetches the image ref (normally repo:tag@sha256:…, pinned by the
// publishing side) into the engine through the failover of package mirror:
// from the endpoints of Options.Mirrors in order (the mirrors, by digest
// only unless their set allows tags, then the source registry unless the
// set turns sourceFallback off; only the source when no set matches), each
// with the credentials of the Docker config for its host and at most
// Options.PullTimeout, stopping at the first that serves it. It returns
// that endpoint; the error names every endpoint tried with its error.
func (a *Applier) pull(ctx context.Context, ref string) (mirror.Endpoint, error) {
	eps, err := a.mirrors.Resolve(ref)
	if err != nil {
		return mirror.Endpoint{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	o := mirror.Options{What: "pull " + ref, Timeout: a.opts.PullTimeout, Log: a.log.With("applier", kind, "image", ref)}
	ep, _, err := mirror.Try(ctx, eps, o, func(ctx context.Context, ep mirror.Endpoint) (mirror.Endpoint, error) {
		return ep, a.pullRef(ctx, ep.Ref)
	})
	if err != nil {
		return mirror.Endpoint{}, err
	}
	a.log.Info("compose: pulled image", "image", ref, "from", ep.Ref, "mirror", ep.Name())
	return ep, nil
}

// pullRef pulls ref from its own registry with the credentials of the
// Docker config for that registry.
func (a *Applier) pullRef(ctx context.Context, ref string) error {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	host := reference.Domain(named)
	encoded, err := a.registryAuth(ctx, host)
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	a.log.Info("compose: pulling image", "image", ref)
	resp, err := a.docker.ImagePull(ctx, ref, client.ImagePullOptions{RegistryAuth: encoded})
	if err != nil {
		return fmt.Errorf("pull %s through the docker engine: %w (is %s reachable from the device, and are its credentials in the Docker config?)", ref, err, host)
	}
	defer resp.Close()
	if err := resp.Wait(ctx); err != nil {
		return fmt.Errorf("pull %s through the docker engine: %w (is %s reachable from the device, and are its credentials in the Docker config?)", ref, err, host)
	}
	return nil
}

// registryAuth returns the X-Registry-Auth value for host: base64url JSON
// of the credentials the Docker config holds for it, empty when none.
func (a *Applier) registryAuth(ctx context.Context, host string) (string, error) {
	a.credsOnce.Do(func() {
		so := credentials.StoreOptions{DetectDefaultNativeStore: true}
		if a.opts.DockerConfig == "" {
			a.creds, a.credsErr = credentials.NewStoreFromDocker(so)
		} else {
			a.creds, a.credsErr = credentials.NewStore(a.opts.DockerConfig, so)
		}
	})
	if a.credsErr != nil {
		return "", fmt.Errorf("open Docker config %s: %w", a.opts.DockerConfig, a.credsErr)
	}
	cred, err := a.creds.Get(ctx, credentials.ServerAddressFromRegistry(host))
	if err != nil {
		return "", fmt.Errorf("credentials for %s: %w", host, err)
	}
	if cred == auth.EmptyCredential {
		return "", nil
	}
	b, err := json.Marshal(registry.AuthConfig{
		Username:      cred.Username,
		Password:      cred.Password,
		IdentityToken: cred.RefreshToken,
		RegistryToken: cred.AccessToken,
		ServerAddress: host,
	})
	if err != nil {
		return "", err
	}
	return base64.URLEncoding.EncodeToString(b), nil
}
