package margo

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/source/margo/margotest"
	"github.com/berth-dev/berth/source/margo/spec"
)

// damages are what a crash of the file system, a full disk or a bad
// sector can leave of a cached file (the writes themselves are atomic).
var damages = []struct {
	name   string
	damage func([]byte) []byte
}{
	{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
	{"empty", func([]byte) []byte { return nil }},
	{"corrupted", func(b []byte) []byte { c := bytes.Clone(b); c[len(c)/2] ^= 0x20; return c }},
	{"trailing bytes", func(b []byte) []byte { return append(bytes.Clone(b), "\nx: 1\n"...) }},
	{"oversized", func(b []byte) []byte { return bytes.Repeat([]byte("#"), spec.MaxManifestSize+spec.MaxDeploymentSize) }},
}

// damageFile rewrites path with what d makes of its content.
func damageFile(t *testing.T, path string, d func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, d(b))
}

// cachedSound reports whether path holds exactly the bytes of digest.
func cachedSound(path, digest string) bool {
	b, err := os.ReadFile(path)
	return err == nil && sha(b) == digest
}

// TestCacheDamagedDeploymentRefetched: a cached ApplicationDeployment YAML
// that no longer hashes to its digest is never used: get reports it
// absent and removes it, and a replay fetches it again from the WFM (the
// bytes it returns are the WFM's) and caches it again, sound.
func TestCacheDamagedDeploymentRefetched(t *testing.T) {
	for _, tc := range damages {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, margotest.Options{}, nil)
			st := accepted(t, f, 5)
			want := depYAML(1, "1.0.0")
			digest := margotest.Digest(want)
			path := f.c.cache.path(digest)
			if !cachedSound(path, digest) {
				t.Fatal("the deployment was not cached")
			}

			damageFile(t, path, tc.damage)
			mark := len(f.wfm.Requests())
			d, err := f.c.Replay(ctx(t), st)
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(d.Deployments, func(v *Verified) bool { return v.Ref.DeploymentID == depID(1) })
			if i < 0 || !bytes.Equal(d.Deployments[i].Raw, want) || d.Fetch.Cached != 1 {
				t.Fatalf("replay after damage: %+v", d.Fetch)
			}
			if got := requestsSince(f.wfm, mark); len(got) != 1 || got[0] != "GET /api/v1/deployments/"+depID(1)+"/"+digest {
				t.Errorf("requests = %v, want the damaged YAML fetched again, alone", got)
			}
			if !cachedSound(path, digest) {
				t.Error("the refetched YAML was not cached again")
			}

			damageFile(t, path, tc.damage)
			if data, ok := f.c.cache.get(digest); ok || data != nil {
				t.Errorf("get returned %d damaged bytes", len(data))
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("the damaged file was kept: %v", err)
			}
		})
	}
}

// TestCacheDamagedManifestRefetched: the same for the accepted manifest a
// replay rebuilds the desired state from: getManifest reports it absent
// and removes it; Replay fetches it again (unconditionally), takes it only
// when it is the accepted body, and caches it again; when the WFM serves
// another manifest by then, Replay fails and caches nothing, leaving the
// new manifest to the next poll.
func TestCacheDamagedManifestRefetched(t *testing.T) {
	for _, tc := range damages {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, margotest.Options{}, nil)
			st := accepted(t, f, 5)
			path := f.c.cache.manifestPath(st.ManifestDigest)
			if !cachedSound(path, st.ManifestDigest) {
				t.Fatal("the manifest was not cached")
			}

			damageFile(t, path, tc.damage)
			mark := len(f.wfm.Requests())
			d, err := f.c.Replay(ctx(t), st)
			if err != nil {
				t.Fatal(err)
			}
			if d.Manifest.ManifestVersion != 5 || d.ManifestDigest != st.ManifestDigest || len(d.Deployments) != 2 || d.Fetch.Cached != 2 {
				t.Fatalf("replay after damage: version %d, digest %s, %d deployments, %+v", d.Manifest.ManifestVersion, d.ManifestDigest, len(d.Deployments), d.Fetch)
			}
			reqs := f.wfm.Requests()[mark:]
			if len(reqs) != 1 || reqs[0].Path != "/api/v1/deployments" || reqs[0].Header.Get("If-None-Match") != "" {
				t.Errorf("requests = %v, want the manifest fetched again without If-None-Match", requestsSince(f.wfm, mark))
			}
			if !cachedSound(path, st.ManifestDigest) {
				t.Error("the refetched manifest was not cached again")
			}

			damageFile(t, path, tc.damage)
			if data, ok := f.c.cache.getManifest(st.ManifestDigest); ok || data != nil {
				t.Errorf("getManifest returned %d damaged bytes", len(data))
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("the damaged file was kept: %v", err)
			}

			// The WFM moved on since: the accepted manifest is gone.
			f.wfm.Publish(6, depYAML(1, "2.0.0"))
			if d, err := f.c.Replay(ctx(t), st); err == nil || !strings.Contains(err.Error(), "the next poll takes it") {
				t.Fatalf("replay of a manifest the WFM no longer serves: %+v, %v", d, err)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("another manifest was cached under the accepted digest: %v", err)
			}
		})
	}
}
