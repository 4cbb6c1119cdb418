package margo

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/errdef"
	"github.com/berth-dev/berth/source/margo/margotest"
	"github.com/berth-dev/berth/source/margo/spec"
)

// TestPollLifecycle follows a device through a first sync (bundle), a
// restart (304), an update of one deployment (that YAML only) and a
// removal (absence is the deletion signal).
func TestPollLifecycle(t *testing.T) {
	f := newFixture(t, margotest.Options{}, nil)
	statePath := filepath.Join(f.dir, "margo-state.json")
	f.wfm.Publish(5, depYAML(1, "1.0.0"), depYAML(2, "1.0.0"), depYAML(3, "1.0.0"))

	st, err := LoadState(statePath)
	if err != nil {
		t.Fatal(err)
	}
	mark := len(f.wfm.Requests())
	d, err := f.c.Poll(ctx(t), st)
	if err != nil {
		t.Fatal(err)
	}
	if d.NotModified || d.Manifest.ManifestVersion != 5 || len(d.Deployments) != 3 || len(d.Changed) != 3 || len(d.Removed) != 0 {
		t.Fatalf("first poll: %+v", d)
	}
	if !d.Fetch.Bundle || d.Fetch.Individual != 0 {
		t.Errorf("first sync of 3 deployments should take the bundle: %+v", d.Fetch)
	}
	if got := requestsSince(f.wfm, mark); len(got) != 2 || got[0] != "GET /api/v1/deployments" || !strings.HasPrefix(got[1], "GET /api/v1/bundles/sha256:") {
		t.Errorf("requests = %v", got)
	}
	first := f.wfm.Requests()[mark]
	if first.Header.Get("Accept") != spec.ManifestMediaType || first.Header.Get("If-None-Match") != "" {
		t.Errorf("manifest request headers: %v", first.Header)
	}
	if d.Deployments[1].Deployment.Name != "app-2" || string(d.Deployments[1].Raw) != string(depYAML(2, "1.0.0")) {
		t.Errorf("deployment 2 = %+v", d.Deployments[1].Deployment)
	}
	// Nothing is persisted by Poll.
	if _, err := os.Stat(statePath); !os.IsNotExist(err) {
		t.Fatal("Poll wrote the state")
	}
	st.Accept(d)
	if err := st.Save(statePath); err != nil {
		t.Fatal(err)
	}

	// Restart: a new client over the same cache and state gets 304.
	f2 := &fixture{wfm: f.wfm, c: mustClient(t, f.c.opts)}
	st, err = LoadState(statePath)
	if err != nil || st.ManifestVersion != 5 || len(st.Deployments) != 3 {
		t.Fatalf("state after restart: %+v, %v", st, err)
	}
	mark = len(f.wfm.Requests())
	d, err = f2.c.Poll(ctx(t), st)
	if err != nil || !d.NotModified {
		t.Fatalf("second poll: %+v, %v", d, err)
	}
	reqs := f.wfm.Requests()[mark:]
	if len(reqs) != 1 || reqs[0].Status != http.StatusNotModified || reqs[0].Header.Get("If-None-Match") != f.wfm.ManifestETag() {
		t.Errorf("304 poll requests: %+v", reqs)
	}

	// Update of deployment 2 only: that YAML alone is fetched.
	f.wfm.Publish(6, depYAML(1, "1.0.0"), depYAML(2, "1.1.0"), depYAML(3, "1.0.0"))
	mark = len(f.wfm.Requests())
	d, err = f2.c.Poll(ctx(t), st)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d.Changed, []string{depID(2)}) || d.Fetch.Bundle || d.Fetch.Individual != 1 || d.Fetch.Cached != 2 {
		t.Errorf("update: changed %v, fetch %+v", d.Changed, d.Fetch)
	}
	want := []string{"GET /api/v1/deployments", "GET /api/v1/deployments/" + depID(2) + "/" + margotest.Digest(depYAML(2, "1.1.0"))}
	if got := requestsSince(f.wfm, mark); !reflect.DeepEqual(got, want) {
		t.Errorf("update requests = %v, want %v", got, want)
	}
	st.Accept(d)
	if st.Deployments[depID(2)].AdoptedManifestVersion != 6 || st.Deployments[depID(1)].AdoptedManifestVersion != 5 {
		t.Errorf("adopted versions: %+v", st.Deployments)
	}

	// Removal: only absence from a verified manifest removes.
	f.wfm.Publish(7, depYAML(1, "1.0.0"))
	d, err = f2.c.Poll(ctx(t), st)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d.Removed, []string{depID(2), depID(3)}) || len(d.Changed) != 0 {
		t.Errorf("removal: removed %v changed %v", d.Removed, d.Changed)
	}
	st.Accept(d)
	if err := f2.c.PruneCache(st, nil); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(f.c.opts.CacheDir, "*.yaml"))
	if len(files) != 1 {
		t.Errorf("cache after prune: %v", files)
	}

	// Empty assignment.
	f.wfm.Publish(8)
	d, err = f2.c.Poll(ctx(t), st)
	if err != nil || len(d.Deployments) != 0 || !reflect.DeepEqual(d.Removed, []string{depID(1)}) {
		t.Errorf("empty manifest: %+v, %v", d, err)
	}
}

func mustClient(t *testing.T, o Options) *Client {
	t.Helper()
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// accepted returns a state that accepted version v of deployments 1 and 2.
func accepted(t *testing.T, f *fixture, v uint64) *State {
	t.Helper()
	f.wfm.Publish(v, depYAML(1, "1.0.0"), depYAML(2, "1.0.0"))
	st := &State{Version: StateVersion}
	d, err := f.c.Poll(ctx(t), st)
	if err != nil {
		t.Fatal(err)
	}
	st.Accept(d)
	return st
}

func TestPollRefused(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, f *fixture)
		is    []error
		want  string
	}{
		{"same version, other content", func(t *testing.T, f *fixture) {
			f.wfm.Publish(10, depYAML(1, "9.9.9"))
		}, []error{ErrStaleManifest, errdef.ErrRefused}, "manifestVersion 10, not greater than the accepted 10"},
		{"lower version", func(t *testing.T, f *fixture) {
			f.wfm.Publish(3, depYAML(1, "1.0.0"), depYAML(2, "1.0.0"))
		}, []error{ErrStaleManifest}, "rollback or replay"},
		{"altered YAML", func(t *testing.T, f *fixture) {
			y := depYAML(2, "2.0.0")
			f.wfm.Publish(11, depYAML(1, "1.0.0"), y)
			f.wfm.Corrupt(margotest.Digest(y), []byte(strings.Replace(string(y), "2.0.0", "6.6.6", 1)))
		}, []error{ErrDigestMismatch, errdef.ErrRefused}, "the manifest says"},
		{"altered bundle", func(t *testing.T, f *fixture) {
			f.wfm.Publish(11, depYAML(1, "3.0.0"), depYAML(2, "3.0.0"), depYAML(3, "3.0.0"))
			var m struct{ Bundle struct{ Digest string } }
			mustJSON(t, f, &m)
			f.wfm.Corrupt(m.Bundle.Digest, []byte("not a bundle"))
		}, []error{ErrDigestMismatch}, "bundle at"},
		{"bundle without a listed deployment", func(t *testing.T, f *fixture) {
			a, b, c := depYAML(1, "3.0.0"), depYAML(2, "3.0.0"), depYAML(3, "3.0.0")
			f.wfm.Publish(11, a, b, c)
			bundle := margotest.TarGz(t, []string{"a.yaml", "b.yaml"}, map[string][]byte{"a.yaml": a, "b.yaml": b})
			bd := f.wfm.AddBundle(bundle)
			f.wfm.PublishManifest(manifestWithBundle(t, f, bd, len(bundle)))
		}, []error{ErrInvalidBundle, errdef.ErrRefused}, "holds 2 files, the manifest lists 3"},
		{"bundle with an extra file", func(t *testing.T, f *fixture) {
			a, b, c := depYAML(1, "3.0.0"), depYAML(2, "3.0.0"), depYAML(3, "3.0.0")
			f.wfm.Publish(11, a, b, c)
			bundle := margotest.TarGz(t, []string{"a.yaml", "b.yaml", "c.yaml", "x.yaml"}, map[string][]byte{"a.yaml": a, "b.yaml": b, "c.yaml": c, "x.yaml": depYAML(4, "1.0.0")})
			bd := f.wfm.AddBundle(bundle)
			f.wfm.PublishManifest(manifestWithBundle(t, f, bd, len(bundle)))
		}, []error{ErrInvalidBundle}, "holds 4 files"},
		{"bundle with a traversal entry", func(t *testing.T, f *fixture) {
			a, b, c := depYAML(1, "3.0.0"), depYAML(2, "3.0.0"), depYAML(3, "3.0.0")
			f.wfm.Publish(11, a, b, c)
			bundle := margotest.TarGz(t, []string{"a.yaml", "b.yaml", "../c.yaml"}, map[string][]byte{"a.yaml": a, "b.yaml": b, "../c.yaml": c})
			bd := f.wfm.AddBundle(bundle)
			f.wfm.PublishManifest(manifestWithBundle(t, f, bd, len(bundle)))
		}, []error{ErrInvalidBundle, errdef.ErrRefused}, "unsafe path"},
		{"YAML not found", func(t *testing.T, f *fixture) {
			y := depYAML(2, "2.0.0")
			f.wfm.Publish(11, depYAML(1, "1.0.0"), y)
			f.wfm.Forget(margotest.Digest(y))
		}, []error{ErrUnavailable}, "404 Deployment Not Found"},
		{"invalid YAML behind a good digest", func(t *testing.T, f *fixture) {
			f.wfm.Publish(11, depYAML(1, "1.0.0"), []byte("id: "+depID(2)+"\nmetadata: {name: x}\n"))
		}, []error{spec.ErrInvalidDeployment, errdef.ErrRefused}, `missing required field "spec"`},
		{"YAML under another id", func(t *testing.T, f *fixture) {
			y := depYAML(9, "1.0.0")
			d := f.wfm.AddContent(depID(2), y)
			f.wfm.PublishManifest([]byte(`{"manifestVersion": 11, "bundle": {"mediaType": "application/vnd.margo.bundle.v1+tar+gzip", "digest": "` + d + `", "url": "/api/v1/bundles/` + d + `"}, "deployments": [{"deploymentId": "` + depID(2) + `", "digest": "` + d + `", "url": "/api/v1/deployments/` + depID(2) + `/` + d + `"}]}`))
		}, []error{spec.ErrInvalidDeployment}, "its YAML has id"},
		{"unknown digest algorithm", func(t *testing.T, f *fixture) {
			d := "sha512:" + strings.Repeat("ab", 64)
			f.wfm.PublishManifest([]byte(`{"manifestVersion": 11, "bundle": {"mediaType": "application/vnd.margo.bundle.v1+tar+gzip", "digest": "` + d + `", "url": "/api/v1/bundles/` + d + `"}, "deployments": [{"deploymentId": "` + depID(2) + `", "digest": "` + d + `", "url": "/api/v1/deployments/` + depID(2) + `/` + d + `"}]}`))
		}, []error{spec.ErrInvalidManifest, errdef.ErrRefused}, `unsupported digest algorithm "sha512"`},
		{"invalid manifest", func(t *testing.T, f *fixture) {
			f.wfm.PublishManifest([]byte(`{"manifestVersion": 11, "bundle": null, "deployments": [], "deployments": []}`))
		}, []error{spec.ErrInvalidManifest, errdef.ErrRefused}, "duplicate key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, margotest.Options{}, nil)
			st := accepted(t, f, 10)
			before := st.Clone()
			cacheBefore, _ := filepath.Glob(filepath.Join(f.c.opts.CacheDir, "*.yaml"))
			tt.setup(t, f)
			d, err := f.c.Poll(ctx(t), st)
			if err == nil {
				t.Fatalf("Poll accepted: %+v", d)
			}
			for _, target := range tt.is {
				if !errors.Is(err, target) {
					t.Errorf("error %v is not %v", err, target)
				}
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if !reflect.DeepEqual(st, before) {
				t.Errorf("state changed: %+v", st)
			}
			// Nothing refused reached the cache.
			cacheAfter, _ := filepath.Glob(filepath.Join(f.c.opts.CacheDir, "*.yaml"))
			for _, p := range cacheAfter {
				if !slices.Contains(cacheBefore, p) {
					data, _ := os.ReadFile(p)
					if strings.Contains(string(data), "6.6.6") {
						t.Errorf("altered content cached: %s", p)
					}
				}
			}
			var b Backoff
			if _, retry := b.Next(err); retry {
				t.Errorf("refused content would be retried: %v", err)
			}
		})
	}
}

func mustJSON(t *testing.T, f *fixture, v any) {
	t.Helper()
	raw := currentManifest(t, f)
	if err := jsonUnmarshal(raw, v); err != nil {
		t.Fatal(err)
	}
}

func currentManifest(t *testing.T, f *fixture) []byte {
	t.Helper()
	m, raw, _, err := f.c.fetchManifest(ctx(t), "")
	if err != nil || m == nil {
		t.Fatal(err)
	}
	return raw
}

// manifestWithBundle rewrites the current manifest to point at bundle bd.
func manifestWithBundle(t *testing.T, f *fixture, bd string, size int) []byte {
	t.Helper()
	var m map[string]any
	mustJSON(t, f, &m)
	m["bundle"] = map[string]any{"mediaType": spec.BundleMediaType, "digest": bd, "sizeBytes": size, "url": "/api/v1/bundles/" + bd}
	raw, err := jsonMarshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestUseBundle(t *testing.T) {
	ref := func(size uint64) spec.DeploymentRef { return spec.DeploymentRef{SizeBytes: size} }
	m := &spec.Manifest{Bundle: &spec.BundleRef{SizeBytes: 3000}, Deployments: []spec.DeploymentRef{ref(1000), ref(1000), ref(1000), ref(1000)}}
	tests := []struct {
		name    string
		m       *spec.Manifest
		missing []spec.DeploymentRef
		want    bool
	}{
		{"one missing", m, m.Deployments[:1], false},
		{"all missing, bundle smaller", m, m.Deployments, true},
		{"two small of a large bundle", &spec.Manifest{Bundle: &spec.BundleRef{SizeBytes: 1 << 20}, Deployments: m.Deployments}, m.Deployments[:2], false},
		{"no sizes, most missing", &spec.Manifest{Bundle: &spec.BundleRef{}, Deployments: []spec.DeploymentRef{{}, {}, {}}}, []spec.DeploymentRef{{}, {}}, true},
		{"no sizes, few missing", &spec.Manifest{Bundle: &spec.BundleRef{}, Deployments: []spec.DeploymentRef{{}, {}, {}, {}, {}}}, []spec.DeploymentRef{{}, {}}, false},
	}
	for _, tt := range tests {
		if got := useBundle(tt.m, tt.missing); got != tt.want {
			t.Errorf("%s: useBundle = %v", tt.name, got)
		}
	}
}

func TestWFMIgnoringIfNoneMatch(t *testing.T) {
	f := newFixture(t, margotest.Options{}, nil)
	st := accepted(t, f, 4)
	st.ETag = `"something-else"` // the WFM will serve 200 with the same body
	d, err := f.c.Poll(ctx(t), st)
	if err != nil || !d.NotModified {
		t.Fatalf("same body again: %+v, %v (must not be taken for a replay)", d, err)
	}
}

// TestRetryFailedDeployment: a deployment that failed is not recorded as
// accepted; while the WFM answers 304, Replay offers it again from the
// cache, without any download.
func TestRetryFailedDeployment(t *testing.T) {
	f := newFixture(t, margotest.Options{}, nil)
	f.wfm.Publish(5, depYAML(1, "1.0.0"), depYAML(2, "1.0.0"))
	st := &State{Version: StateVersion}
	d, err := f.c.Poll(ctx(t), st)
	if err != nil {
		t.Fatal(err)
	}
	st.Accept(d, depID(2))
	if _, ok := st.Deployments[depID(2)]; ok || st.ManifestVersion != 5 || !st.Pending(d.Manifest) {
		t.Fatalf("state = %+v", st)
	}
	d, err = f.c.Poll(ctx(t), st)
	if err != nil || !d.NotModified {
		t.Fatalf("poll: %+v %v", d, err)
	}
	mark := len(f.wfm.Requests())
	r, err := f.c.Replay(ctx(t), st)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r.Changed, []string{depID(2)}) || len(r.Deployments) != 2 || r.Manifest.ManifestVersion != 5 || len(f.wfm.Requests()) != mark {
		t.Fatalf("replay: changed %v, %d deployments, %d requests", r.Changed, len(r.Deployments), len(f.wfm.Requests())-mark)
	}
	st.Accept(r)
	if st.Pending(r.Manifest) || st.Deployments[depID(2)].AdoptedManifestVersion != 5 {
		t.Errorf("after the retry: %+v", st)
	}
	// The pruned cache keeps what a replay needs.
	if err := f.c.PruneCache(st, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.Replay(ctx(t), st); err != nil {
		t.Errorf("replay after prune: %v", err)
	}
}
