package bundle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/source/oci"
)

// defaultJobs is how many blobs Push uploads at once.
const defaultJobs = 4

// PushOptions say where to load a bundle.
type PushOptions struct {
	// Target is REGISTRY[/PREFIX]: each original repository host/path
	// goes to Target/path (see MapRepository).
	Target string
	// Jobs is how many blobs are uploaded at once; 0 means 4.
	Jobs int
	// Progress, when set, wraps a reader counting the bytes read from the
	// bundle for upload (size: the total of all blobs), for a progress
	// display.
	Progress func(r io.Reader, size int64) io.Reader
	// Log receives what is pushed and skipped, at debug level; nil logs
	// nothing.
	Log *slog.Logger
}

// Counts says how many things Push uploaded and how many the registry
// already had.
type Counts struct {
	Pushed       int   `json:"pushed"`
	Skipped      int   `json:"skipped"`
	PushedBytes  int64 `json:"pushedBytes"`
	SkippedBytes int64 `json:"skippedBytes"`
}

func (c *Counts) add(pushed bool, size int64) {
	if pushed {
		c.Pushed++
		c.PushedBytes += size
	} else {
		c.Skipped++
		c.SkippedBytes += size
	}
}

// Mapping is where one original repository went.
type Mapping struct {
	Source string `json:"source"`
	Target string `json:"target"`
}

// PushResult says what Push did.
type PushResult struct {
	// Target is the REGISTRY[/PREFIX] pushed to.
	Target string `json:"target"`
	// Root is the state's reference in the target registry, by digest.
	Root string `json:"root"`
	// Repositories maps each original repository to its target.
	Repositories []Mapping `json:"repositories"`
	// Blobs, Manifests and Tags count what was uploaded and skipped.
	// Manifests include indexes and the signatures' manifests.
	Blobs     Counts `json:"blobs"`
	Manifests Counts `json:"manifests"`
	Tags      Counts `json:"tags"`
	// Refused lists the manifests the registry would not take (an index
	// naming platforms the bundle left out, on a registry that checks an
	// index's children), with the registry's reason. Push then returns
	// ErrIncomplete.
	Refused []string `json:"refused,omitempty"`
}

// prefixRE is a repository path prefix.
var prefixRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)

// ParseTarget checks REGISTRY[/PREFIX] (an oci:// scheme and a trailing
// slash are accepted) and returns it normalised.
func ParseTarget(target string) (string, error) {
	t := strings.TrimSuffix(strings.TrimPrefix(target, oci.Scheme), "/")
	host, prefix, _ := strings.Cut(t, "/")
	if host == "" || strings.ContainsAny(host, "@ ") {
		return "", fmt.Errorf("%w %q: want REGISTRY[/PREFIX], such as plant.local:5000/mirror", oci.ErrInvalidReference, target)
	}
	if _, err := name.NewRegistry(host, name.StrictValidation); err != nil {
		return "", fmt.Errorf("%w %q: registry %q: %v", oci.ErrInvalidReference, target, host, err)
	}
	if prefix != "" && !prefixRE.MatchString(prefix) {
		return "", fmt.Errorf("%w %q: prefix %q: lowercase path segments of letters, digits and . _ -", oci.ErrInvalidReference, target, prefix)
	}
	return t, nil
}

// MapRepository maps an original repository (host/path) to where Push
// puts it under target (REGISTRY[/PREFIX]): target/path, the original
// host dropped. With target plant.local:5000/mirror, ghcr.io/acme/web goes
// to plant.local:5000/mirror/acme/web and docker.io/library/nginx to
// plant.local:5000/mirror/library/nginx. That is the layout of a mirror:
// the agent's registries entry {source: ghcr.io, mirrors:
// [plant.local:5000/mirror]} finds ghcr.io/acme/web there. Repositories of
// several hosts share one namespace, so push bundles of different hosts
// under different prefixes when their paths could collide.
func MapRepository(original, target string) (string, error) {
	t, err := ParseTarget(target)
	if err != nil {
		return "", err
	}
	_, path, ok := strings.Cut(original, "/")
	if !ok || path == "" {
		return "", fmt.Errorf("%w %q: want host/repository", oci.ErrInvalidReference, original)
	}
	out := t + "/" + path
	if _, err := oci.ParseReference(out); err != nil {
		return "", err
	}
	return out, nil
}

// pusher is one Push.
type pusher struct {
	b      *Bundle
	c      *oci.Client
	o      PushOptions
	log    *slog.Logger
	ropts  []remote.Option
	pusher *remote.Pusher
	puller *remote.Puller
	repos  map[string]name.Repository // original → target

	mu        sync.Mutex
	res       PushResult
	refused   map[string]map[digest.Digest]bool // target repo → refused manifests
	referrers map[string]map[digest.Digest]bool // target subject → listed referrers
	known     map[string]bool                   // target manifests known to be in place
}

// Push loads the bundle into the registry o.Target names, keeping every
// digest: each original repository goes where MapRepository says, with
// its blobs, manifests (children before indexes, the state before its
// signatures), the referrers of the state (attached through the
// registry's referrers API, else its sha256-<hex> tag fallback index) and
// its tags (the legacy sha256-<hex>.sig signature tag among them). Blobs
// the registry has are skipped after a HEAD request, and so are manifests
// and tags already in place, so pushing again uploads nothing. Every blob
// is checked against its digest as it is read from the bundle. c supplies
// credentials, CAs and plain HTTP for the target registry.
func (b *Bundle) Push(ctx context.Context, c *oci.Client, o PushOptions) (*PushResult, error) {
	target, err := ParseTarget(o.Target)
	if err != nil {
		return nil, fmt.Errorf("push bundle: %w", err)
	}
	p := &pusher{b: b, c: c, o: o, log: o.Log, repos: map[string]name.Repository{},
		refused: map[string]map[digest.Digest]bool{}, referrers: map[string]map[digest.Digest]bool{}, known: map[string]bool{}}
	p.res.Target = target
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.o.Jobs <= 0 {
		p.o.Jobs = defaultJobs
	}
	p.ropts = append(c.RemoteOptions(ctx), remote.WithReferrersTagFallback(true))
	if p.pusher, err = remote.NewPusher(p.ropts...); err != nil {
		return nil, fmt.Errorf("push bundle: %w", err)
	}
	if p.puller, err = remote.NewPuller(p.ropts...); err != nil {
		return nil, fmt.Errorf("push bundle: %w", err)
	}
	names := make([]string, 0, len(b.repos))
	for r := range b.repos {
		names = append(names, r)
	}
	slices.Sort(names)
	for _, r := range names {
		t, err := MapRepository(r, target)
		if err != nil {
			return nil, fmt.Errorf("push bundle: %w", err)
		}
		tr, err := name.NewRepository(t, c.NameOptions()...)
		if err != nil {
			return nil, fmt.Errorf("push bundle: %w %s: %v", oci.ErrInvalidReference, t, err)
		}
		p.repos[r] = tr
		p.res.Repositories = append(p.res.Repositories, Mapping{Source: r, Target: t})
	}
	rootRef, rootDesc := b.Root()
	rr, _ := parseRefName(rootRef)
	p.res.Root = p.repos[rr.repo].Digest(rootDesc.Digest.String()).String()

	if err := p.pushBlobs(ctx, names); err != nil {
		return nil, fmt.Errorf("push bundle to %s: %w", target, err)
	}
	for _, it := range b.items {
		if err := p.pushItem(ctx, it); err != nil {
			return nil, fmt.Errorf("push bundle to %s: %s %s: %w", target, it.Role, it.Ref, err)
		}
	}
	if len(p.res.Refused) > 0 {
		return &p.res, fmt.Errorf("%w to %s: the registry refused %d manifest(s): %s", ErrIncomplete, target, len(p.res.Refused), strings.Join(p.res.Refused, "; "))
	}
	return &p.res, nil
}

// blobJob is one blob to upload to one repository.
type blobJob struct {
	repo name.Repository
	node *node
}

// pushBlobs uploads every config and layer to every repository that needs
// it, o.Jobs at a time.
func (p *pusher) pushBlobs(ctx context.Context, names []string) error {
	var jobs []blobJob
	var total int64
	for _, r := range names {
		ds := make([]digest.Digest, 0, len(p.b.repos[r].members))
		for d := range p.b.repos[r].members {
			if n := p.b.nodes[d]; !n.manifest {
				ds = append(ds, d)
			}
		}
		slices.Sort(ds)
		for _, d := range ds {
			n := p.b.nodes[d]
			jobs = append(jobs, blobJob{repo: p.repos[r], node: n})
			total += n.desc.Size
		}
	}
	prog := newMeter(p.o.Progress, total)
	defer prog.done()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ch := make(chan blobJob)
	var wg sync.WaitGroup
	for range min(p.o.Jobs, max(len(jobs), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				if err := p.pushBlob(ctx, j, prog); err != nil {
					cancel(err)
				}
			}
		}()
	}
	for _, j := range jobs {
		select {
		case ch <- j:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(ch)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return nil
}

func (p *pusher) pushBlob(ctx context.Context, j blobJob, prog *meter) error {
	l := &tarLayer{b: p.b, n: j.node, prog: prog}
	if err := p.pusher.Upload(ctx, j.repo, l); err != nil {
		return fmt.Errorf("upload blob %s%s to %s: %w", j.node.desc.Digest, p.b.owner(j.node.desc.Digest), j.repo, err)
	}
	l.mu.Lock()
	pushed := l.opened
	l.mu.Unlock()
	if !pushed {
		prog.add(j.node.desc.Size)
	}
	p.mu.Lock()
	p.res.Blobs.add(pushed, j.node.desc.Size)
	p.mu.Unlock()
	p.log.Debug("blob", "repo", j.repo.String(), "digest", j.node.desc.Digest.String(), "pushed", pushed)
	return nil
}

// pushItem pushes a top-level manifest's manifests, children first, then
// its tag.
func (p *pusher) pushItem(ctx context.Context, it Item) error {
	ref, err := parseRefName(it.Ref)
	if err != nil {
		return err
	}
	tr := p.repos[ref.repo]
	if err := p.pushManifest(ctx, tr, it.Digest, 0); err != nil {
		return err
	}
	if it.Tag == "" {
		return nil
	}
	if p.refused[tr.String()][it.Digest] {
		return nil
	}
	tag := tr.Tag(it.Tag)
	if d, err := p.puller.Head(ctx, tag); err == nil && d.Digest.String() == it.Digest.String() {
		p.res.Tags.add(false, 0)
		return nil
	} else if err != nil && !isNotFound(err) {
		return fmt.Errorf("look up %s: %w", tag, err)
	}
	raw, err := p.b.readBlob(it.Digest)
	if err != nil {
		return err
	}
	if err := p.pusher.Put(ctx, tag, rawManifest{raw: raw, mediaType: types.MediaType(p.b.nodes[it.Digest].desc.MediaType)}); err != nil {
		return fmt.Errorf("tag %s: %w", tag, err)
	}
	p.res.Tags.add(true, 0)
	p.log.Debug("tag", "ref", tag.String(), "digest", it.Digest.String())
	return nil
}

// pushManifest pushes a manifest or index after its child manifests,
// unless the registry has it.
func (p *pusher) pushManifest(ctx context.Context, tr name.Repository, d digest.Digest, depth int) error {
	n := p.b.nodes[d]
	key := tr.String()
	if p.refused[key] == nil {
		p.refused[key] = map[digest.Digest]bool{}
	}
	if depth > maxDepth {
		return fmt.Errorf("indexes nest more than %d deep", maxDepth)
	}
	if n.index {
		for _, c := range n.children {
			if err := p.pushManifest(ctx, tr, c.Digest, depth+1); err != nil {
				return err
			}
		}
	}
	ref := tr.Digest(d.String())
	if p.seenManifest(ref) || p.refused[key][d] {
		return nil
	}
	exists, err := p.manifestExists(ctx, ref, n)
	if err != nil {
		return err
	}
	if exists {
		p.res.Manifests.add(false, n.desc.Size)
		p.markManifest(ref)
		return nil
	}
	raw, err := p.b.readBlob(d)
	if err != nil {
		return err
	}
	err = p.pusher.Put(ctx, ref, rawManifest{raw: raw, mediaType: types.MediaType(n.desc.MediaType)})
	var terr *transport.Error
	if err != nil && n.index && len(n.excluded) > 0 && errors.As(err, &terr) && terr.StatusCode < 500 {
		p.refused[key][d] = true
		p.res.Refused = append(p.res.Refused, fmt.Sprintf("%s (%s, which names %d platform manifest(s) the bundle leaves out): %v", ref, n.owner, len(n.excluded), err))
		p.log.Warn("the registry refused an index the bundle holds only some platforms of", "ref", ref.String(), "error", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("push manifest %s (%s): %w", ref, n.owner, err)
	}
	p.res.Manifests.add(true, n.desc.Size)
	p.markManifest(ref)
	p.log.Debug("manifest", "ref", ref.String(), "owner", n.owner)
	return nil
}

// manifestExists reports whether the registry has the manifest and, for a
// referrer, lists it among its subject's referrers.
func (p *pusher) manifestExists(ctx context.Context, ref name.Digest, n *node) (bool, error) {
	d, err := p.puller.Head(ctx, ref)
	switch {
	case err != nil && isNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("look up %s: %w", ref, err)
	case d.Digest.String() != n.desc.Digest.String():
		return false, fmt.Errorf("look up %s: the registry answered with %s", ref, d.Digest)
	}
	if n.subject == nil {
		return true, nil
	}
	subject := ref.Context().Digest(n.subject.Digest.String())
	listed, err := p.listedReferrers(ctx, subject)
	if err != nil {
		return false, err
	}
	return listed[n.desc.Digest], nil
}

// seenManifest and markManifest remember manifests known to be in place,
// so one shared by several items is looked up once.
func (p *pusher) seenManifest(ref name.Digest) bool { return p.known[ref.String()] }
func (p *pusher) markManifest(ref name.Digest)      { p.known[ref.String()] = true }

// listedReferrers lists the referrers the registry reports for subject.
func (p *pusher) listedReferrers(ctx context.Context, subject name.Digest) (map[digest.Digest]bool, error) {
	key := subject.String()
	if l, ok := p.referrers[key]; ok {
		return l, nil
	}
	idx, err := remote.Referrers(subject, append(p.ropts, remote.Reuse(p.puller), remote.WithContext(ctx))...)
	if err != nil {
		return nil, fmt.Errorf("list the referrers of %s: %w", subject, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("list the referrers of %s: %w", subject, err)
	}
	l := map[digest.Digest]bool{}
	for _, d := range im.Manifests {
		l[digest.Digest(d.Digest.String())] = true
	}
	p.referrers[key] = l
	return l, nil
}

func isNotFound(err error) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound
}

// rawManifest is a remote.Taggable for a manifest as stored.
type rawManifest struct {
	raw       []byte
	mediaType types.MediaType
}

var _ remote.Taggable = rawManifest{}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.raw, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mediaType, nil }

// tarLayer uploads a blob of the bundle, digest-checked while it is read.
// opened records whether the upload read it (the registry did not have
// it).
type tarLayer struct {
	b    *Bundle
	n    *node
	prog *meter

	mu     sync.Mutex
	opened bool
}

var _ v1.Layer = (*tarLayer)(nil)

func (l *tarLayer) Digest() (v1.Hash, error) { return v1.NewHash(l.n.desc.Digest.String()) }
func (l *tarLayer) DiffID() (v1.Hash, error) {
	return v1.Hash{}, errors.New("bundle blobs have no diff ID")
}
func (l *tarLayer) Size() (int64, error) { return l.n.desc.Size, nil }
func (l *tarLayer) MediaType() (types.MediaType, error) {
	if l.n.desc.MediaType == "" {
		return "application/octet-stream", nil
	}
	return types.MediaType(l.n.desc.MediaType), nil
}
func (l *tarLayer) Uncompressed() (io.ReadCloser, error) {
	return nil, errors.New("bundle blobs are uploaded as stored")
}
func (l *tarLayer) Compressed() (io.ReadCloser, error) {
	l.mu.Lock()
	l.opened = true
	l.mu.Unlock()
	rc, err := l.b.openBlob(l.n.desc.Digest)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{l.prog.reader(rc), rc}, nil
}
