package margo

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/margo/spec"
)

// Desired is the outcome of a poll: the WFM's verified desired state.
type Desired struct {
	// NotModified is set when the WFM answered 304: nothing else is set.
	NotModified bool
	// Manifest is the new manifest.
	Manifest *spec.Manifest
	// ETag is its ETag header; ManifestDigest sha256 of its body.
	ETag, ManifestDigest string
	// Deployments are the manifest's deployments in its order, each
	// verified and parsed.
	Deployments []*Verified
	// Changed are the ids of the deployments that are new or whose digest
	// differs from the accepted state, in manifest order.
	Changed []string
	// Removed are the ids of the accepted deployments the manifest no
	// longer lists: the only deletion signal.
	Removed []string
	// Fetch says what was downloaded.
	Fetch FetchStats
}

// Verified is one deployment of a manifest, its bytes verified.
type Verified struct {
	Ref        spec.DeploymentRef
	Deployment *spec.Deployment
	// Raw is the exact YAML the digest covers.
	Raw []byte
}

// FetchStats says how a poll got the deployments.
type FetchStats struct {
	// Bundle is set when the bundle was downloaded.
	Bundle bool `json:"bundle"`
	// Individual is the number of YAMLs downloaded one by one.
	Individual int `json:"individual"`
	// Cached is the number of YAMLs found in the local cache.
	Cached int `json:"cached"`
	// Bytes downloaded (bodies, after content decoding).
	Bytes int64 `json:"bytes"`
}

// Poll asks the WFM for the desired state and verifies it against st, the
// accepted state (which Poll does not change). It returns a Desired with
// NotModified set on 304; a *StaleManifestError when the manifestVersion
// is not greater than st's (logged as a security event); an error wrapping
// ErrDigestMismatch, ErrTooLarge, ErrInvalidBundle or spec's
// ErrInvalidManifest / ErrInvalidDeployment when content is refused; one
// that is ErrUnavailable when the WFM answers 404 for content; an
// *APIError for other answers. On any error nothing is to be applied.
func (c *Client) Poll(ctx context.Context, st *State) (*Desired, error) {
	m, raw, etag, err := c.fetchManifest(ctx, st.ETag)
	if err != nil {
		return nil, err
	}
	if m == nil {
		return &Desired{NotModified: true}, nil
	}
	digest := sha(raw)
	if digest == st.ManifestDigest && st.ManifestDigest != "" {
		// The WFM ignored If-None-Match and served the accepted body again.
		return &Desired{NotModified: true}, nil
	}
	if st.ManifestVersion != 0 && m.ManifestVersion <= st.ManifestVersion {
		err := &StaleManifestError{Got: m.ManifestVersion, Accepted: st.ManifestVersion}
		c.log.Error("Margo security event: manifest rollback or replay refused",
			"securityEvent", "margo-manifest-rollback", "manifestVersion", m.ManifestVersion,
			"acceptedVersion", st.ManifestVersion, "manifestDigest", digest)
		return nil, err
	}
	d := &Desired{Manifest: m, ETag: etag, ManifestDigest: digest}
	d.Fetch.Bytes = int64(len(raw))
	if err := c.fetchDeployments(ctx, d); err != nil {
		return nil, err
	}
	if err := c.cache.putManifest(digest, raw); err != nil {
		return nil, err
	}
	c.diff(d, st)
	c.log.Info("Margo desired state", "manifestVersion", m.ManifestVersion, "deployments", len(d.Deployments),
		"changed", len(d.Changed), "removed", len(d.Removed), "bundle", d.Fetch.Bundle,
		"fetched", d.Fetch.Individual, "cached", d.Fetch.Cached, "bytes", d.Fetch.Bytes)
	return d, nil
}

// Replay rebuilds the accepted desired state from the local cache (the
// manifest st accepted and its YAMLs, re-verified), with Changed listing
// the deployments st does not hold at their manifest digest: those that
// failed before (see State.Accept). The agent calls it when the WFM
// answers 304 and st has such deployments, to retry them. It returns nil
// when st has accepted no manifest.
func (c *Client) Replay(ctx context.Context, st *State) (*Desired, error) {
	if st.ManifestDigest == "" {
		return nil, nil
	}
	raw, ok := c.cache.getManifest(st.ManifestDigest)
	var m *spec.Manifest
	var err error
	if ok {
		m, err = spec.ParseManifest(raw)
	} else {
		m, err = c.refetchManifest(ctx, st)
	}
	if err != nil {
		return nil, err
	}
	d := &Desired{Manifest: m, ETag: st.ETag, ManifestDigest: st.ManifestDigest}
	if err := c.fetchDeployments(ctx, d); err != nil {
		return nil, err
	}
	c.diff(d, st)
	return d, nil
}

// refetchManifest fetches the accepted manifest again, unconditionally,
// when the cache lost it (absent, or damaged and removed): only a body of
// the accepted digest is taken (and cached again); another one (the WFM
// moved on since its 304) is left for the next poll, which takes it as an
// update.
func (c *Client) refetchManifest(ctx context.Context, st *State) (*spec.Manifest, error) {
	c.log.Warn("Margo: the accepted manifest is missing or damaged in the cache; fetching it again", "manifestDigest", st.ManifestDigest, "cache", c.cache.dir)
	m, raw, _, err := c.fetchManifest(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("the accepted Margo manifest %s is not in the cache %s, and fetching it again failed: %w", st.ManifestDigest, c.cache.dir, err)
	}
	if d := sha(raw); d != st.ManifestDigest {
		return nil, fmt.Errorf("the accepted Margo manifest %s is not in the cache %s, and the WFM now serves %s (manifestVersion %d): the next poll takes it", st.ManifestDigest, c.cache.dir, d, m.ManifestVersion)
	}
	if err := c.cache.putManifest(st.ManifestDigest, raw); err != nil {
		return nil, err
	}
	return m, nil
}

// Pending reports whether d lists deployments that st does not hold at
// their digest (failed ones to retry).
func (st *State) Pending(m *spec.Manifest) bool {
	for _, r := range m.Deployments {
		if ds, ok := st.Deployments[r.DeploymentID]; !ok || ds.Digest != r.Digest {
			return true
		}
	}
	return false
}

// diff fills d.Changed and d.Removed against st.
func (c *Client) diff(d *Desired, st *State) {
	listed := map[string]bool{}
	for _, v := range d.Deployments {
		listed[v.Ref.DeploymentID] = true
		if old, ok := st.Deployments[v.Ref.DeploymentID]; !ok || old.Digest != v.Ref.Digest {
			d.Changed = append(d.Changed, v.Ref.DeploymentID)
		}
	}
	for id := range st.Deployments {
		if !listed[id] {
			d.Removed = append(d.Removed, id)
		}
	}
	slices.Sort(d.Removed)
}

// PruneCache removes the cached YAMLs that neither st nor d needs; call it
// after saving an accepted state.
func (c *Client) PruneCache(st *State, d *Desired) error {
	keep := map[string]bool{st.ManifestDigest: true}
	for _, ds := range st.Deployments {
		keep[ds.Digest] = true
	}
	if d != nil {
		for _, v := range d.Deployments {
			keep[v.Ref.Digest] = true
		}
	}
	return c.cache.prune(keep)
}

// fetchManifest GETs the manifest. It returns a nil manifest on 304.
func (c *Client) fetchManifest(ctx context.Context, etag string) (*spec.Manifest, []byte, string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	h := http.Header{"Accept": {spec.ManifestMediaType}}
	if etag != "" {
		h.Set("If-None-Match", etag)
	}
	u := c.resolve(pathDeployments, false)
	resp, err := c.request(ctx, http.MethodGet, u, h, nil, http.StatusOK, http.StatusNotModified)
	if err != nil {
		return nil, nil, "", fmt.Errorf("poll desired state: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified {
		if etag == "" {
			return nil, nil, "", fmt.Errorf("poll desired state: GET %s: 304 Not Modified without If-None-Match", u)
		}
		return nil, nil, "", nil
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != spec.ManifestMediaType && mt != "application/json" {
		return nil, nil, "", fmt.Errorf("%w: GET %s: Content-Type %q is not %s", spec.ErrInvalidManifest, u, resp.Header.Get("Content-Type"), spec.ManifestMediaType)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, spec.MaxManifestSize+1))
	if err != nil {
		return nil, nil, "", fmt.Errorf("poll desired state: read %s: %w", u, err)
	}
	if len(raw) > spec.MaxManifestSize {
		return nil, nil, "", fmt.Errorf("%w: manifest at %s is larger than %d bytes", ErrTooLarge, u, spec.MaxManifestSize)
	}
	tag := resp.Header.Get("ETag")
	if d := strings.Trim(tag, `"`); spec.ValidDigest(d) && !strings.HasPrefix(tag, "W/") && d != sha(raw) {
		return nil, nil, "", fmt.Errorf("%w: manifest at %s has digest %s, its ETag says %s", ErrDigestMismatch, u, sha(raw), d)
	}
	m, err := spec.ParseManifest(raw)
	if err != nil {
		return nil, nil, "", fmt.Errorf("manifest at %s: %w", u, err)
	}
	return m, raw, tag, nil
}

// fetchDeployments fills d.Deployments: from the cache, else by the
// cheaper of the bundle and the individual YAMLs.
func (c *Client) fetchDeployments(ctx context.Context, d *Desired) error {
	m := d.Manifest
	got := map[string][]byte{} // by digest
	var missing []spec.DeploymentRef
	for _, ref := range m.Deployments {
		if data, ok := c.cache.get(ref.Digest); ok {
			got[ref.Digest] = data
			d.Fetch.Cached++
			continue
		}
		missing = append(missing, ref)
	}
	if len(missing) > 0 {
		if useBundle(m, missing) {
			if err := c.fetchBundle(ctx, m, missing, got, &d.Fetch); err != nil {
				return err
			}
		} else {
			for _, ref := range missing {
				data, err := c.fetchYAML(ctx, ref, &d.Fetch)
				if err != nil {
					return err
				}
				got[ref.Digest] = data
			}
		}
	}
	for _, ref := range m.Deployments {
		raw := got[ref.Digest]
		dep, err := spec.ParseDeployment("deployment "+ref.DeploymentID, raw)
		if err != nil {
			return err
		}
		if !strings.EqualFold(dep.ID, ref.DeploymentID) {
			return fmt.Errorf("%w: deployment %s: its YAML has id %s", spec.ErrInvalidDeployment, ref.DeploymentID, dep.ID)
		}
		d.Deployments = append(d.Deployments, &Verified{Ref: ref, Deployment: dep, Raw: raw})
	}
	return nil
}

// requestOverhead is what one request is taken to cost besides its body,
// to choose between the bundle and individual YAMLs.
const requestOverhead = 2 << 10

// useBundle says whether fetching the bundle is cheaper than fetching the
// missing YAMLs one by one. With sizes (advisory) it compares bytes plus a
// per-request overhead; without them, the bundle is used when more than one
// YAML is missing and they are at least half of the manifest.
func useBundle(m *spec.Manifest, missing []spec.DeploymentRef) bool {
	if m.Bundle == nil || len(missing) <= 1 {
		return false
	}
	var sum uint64
	for _, r := range missing {
		if r.SizeBytes == 0 {
			return 2*len(missing) >= len(m.Deployments)
		}
		sum += r.SizeBytes + requestOverhead
	}
	if m.Bundle.SizeBytes == 0 {
		return 2*len(missing) >= len(m.Deployments)
	}
	return m.Bundle.SizeBytes+requestOverhead < sum
}

// fetchYAML downloads and verifies one deployment YAML, and caches it.
func (c *Client) fetchYAML(ctx context.Context, ref spec.DeploymentRef, fs *FetchStats) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	u := c.resolve(ref.URL, true)
	resp, err := c.request(ctx, http.MethodGet, u, http.Header{"Accept": {spec.DeploymentMediaType}}, nil, http.StatusOK)
	if err != nil {
		return nil, fmt.Errorf("fetch deployment %s: %w", ref.DeploymentID, err)
	}
	defer resp.Body.Close()
	f, n, err := verifiedBody(resp.Body, c.cache.dir, "deployment "+ref.DeploymentID+" at "+u, ref.Digest, spec.MaxDeploymentSize)
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	data, err := io.ReadAll(f) // verified, at most MaxDeploymentSize bytes
	if err != nil {
		return nil, err
	}
	fs.Individual++
	fs.Bytes += n
	if err := c.cache.put(ref.Digest, data); err != nil {
		return nil, err
	}
	return data, nil
}

// fetchBundle downloads and verifies the bundle, checks that it holds
// exactly the manifest's YAMLs, and caches the missing ones.
func (c *Client) fetchBundle(ctx context.Context, m *spec.Manifest, missing []spec.DeploymentRef, got map[string][]byte, fs *FetchStats) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	u := c.resolve(m.Bundle.URL, true)
	resp, err := c.request(ctx, http.MethodGet, u, http.Header{"Accept": {spec.BundleMediaType}}, nil, http.StatusOK)
	if err != nil {
		return fmt.Errorf("fetch bundle %s: %w", m.Bundle.Digest, err)
	}
	defer resp.Body.Close()
	f, n, err := verifiedBody(resp.Body, c.cache.dir, "bundle at "+u, m.Bundle.Digest, c.opts.MaxBundleSize)
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	fs.Bundle = true
	fs.Bytes += n
	files, err := c.bundleFiles(ctx, f, len(m.Deployments))
	if err != nil {
		return fmt.Errorf("%w: bundle %s: %v", ErrInvalidBundle, m.Bundle.Digest, err)
	}
	want := map[string]bool{}
	for _, r := range m.Deployments {
		want[r.Digest] = true
	}
	for name, digest := range files {
		if !want[digest.digest] {
			return fmt.Errorf("%w: bundle %s holds %s (%s), which the manifest does not list", ErrInvalidBundle, m.Bundle.Digest, name, digest.digest)
		}
	}
	byDigest := map[string][]byte{}
	for _, fd := range files {
		byDigest[fd.digest] = fd.data
	}
	for _, r := range m.Deployments {
		if _, ok := byDigest[r.Digest]; !ok {
			return fmt.Errorf("%w: bundle %s lacks deployment %s (%s)", ErrInvalidBundle, m.Bundle.Digest, r.DeploymentID, r.Digest)
		}
	}
	for _, r := range missing {
		got[r.Digest] = byDigest[r.Digest]
		if err := c.cache.put(r.Digest, byDigest[r.Digest]); err != nil {
			return err
		}
	}
	return nil
}

type bundleFile struct {
	digest string
	data   []byte
}

// bundleFiles extracts the bundle with berth's safe extractor into a
// temporary folder and returns its files, which must all be regular files
// at its root.
func (c *Client) bundleFiles(ctx context.Context, r io.Reader, count int) (map[string]bundleFile, error) {
	tmp, err := os.MkdirTemp(c.cache.dir, ".bundle-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "x")
	lim := archive.Limits{MaxFiles: count + 1, MaxFileSize: spec.MaxDeploymentSize, MaxSize: int64(count+1) * spec.MaxDeploymentSize}
	if _, err := archive.ExtractAtomic(ctx, r, dir, lim); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string]bundleFile{}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			return nil, fmt.Errorf("entry %q is not a file at the root of the bundle", e.Name())
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name())) // capped by MaxFileSize
		if err != nil {
			return nil, err
		}
		h := sha256.Sum256(data)
		out[e.Name()] = bundleFile{digest: fmt.Sprintf("sha256:%x", h), data: data}
	}
	if len(out) != count {
		return nil, fmt.Errorf("holds %d files, the manifest lists %d deployments", len(out), count)
	}
	return out, nil
}
