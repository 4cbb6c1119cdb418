package compose

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
)

// ensureImages makes every image of the project present in the engine: an
// image found locally (by its pinned reference) is not pulled.
func (a *Applier) ensureImages(ctx context.Context, p *types.Project) error {
	names := p.ServiceNames()
	sort.Strings(names)
	done := map[string]bool{}
	for _, name := range names {
		ref := p.Services[name].Image
		if done[ref] {
			continue
		}
		done[ref] = true
		_, err := a.docker.ImageInspect(ctx, ref)
		if err == nil {
			continue
		}
		if !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("service %q: inspect image %s on the docker engine %s: %w", name, ref, a.opts.Host, err)
		}
		if err := a.pull(ctx, ref); err != nil {
			return fmt.Errorf("service %q: %w", name, err)
		}
	}
	return nil
}

// pull fetches the image ref (normally repo:tag@sha256:…, pinned by the
// publishing side) into the engine, from its own registry, with the
// credentials of the Docker config for that registry.
//
// This is the seam for registry mirrors: trying the configured mirrors in
// order (by digest only unless a mirror allows tags) before the source
// registry belongs here, and nowhere else.
func (a *Applier) pull(ctx context.Context, ref string) error {
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
