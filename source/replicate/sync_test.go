package replicate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/policy/cosign"
)

func testLogger(_ *testing.T, w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// modes are the registry pairs every sync test runs on: with and without
// the referrers API at either end (without it, bundles live in the
// sha256-<hex> fallback index).
var modes = []struct {
	name                 string
	upstream, downstream bool
}{
	{"api-to-api", true, true},
	{"fallback-to-fallback", false, false},
	{"api-to-fallback", true, false},
	{"fallback-to-api", false, true},
}

// TestSyncSemver is the main path: a semver selection with an index of two
// platforms and signatures in both formats is copied with the same
// digests and verifies at the target; the next pass writes nothing; a new
// upstream tag is copied by the pass after.
func TestSyncSemver(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			up, down := startRegistry(t, m.upstream), startRegistry(t, m.downstream)
			src, dst := up.host+"/acme/app", down.host+"/plant/app"
			key := newKey(t)

			idx, children := pushIndex(t, src+":1.0.0")
			v11 := pushImage(t, src+":1.1.0")
			v12 := pushImage(t, src+":v1.2.0")
			pushImage(t, src+":2.0.0")
			pushImage(t, src+":main")
			tag(t, src, v12, "1.2.0-rc.1") // a pre-release: out of range
			key.sign(t, src, idx, cosign.FormatBundle)
			key.sign(t, src, idx, cosign.FormatLegacy)
			key.sign(t, src, v11, cosign.FormatLegacy)
			key.sign(t, src, v12, cosign.FormatBundle)

			s := newSyncer(t, fmt.Sprintf(`
jobs:
  - name: app
    source: %s
    targets: [%s]
    semver: ">=1.0 <2"
`, src, dst))
			rep := s.Once(context.Background())
			if !rep.OK() || rep.Copied != 3 || rep.UpToDate != 0 || rep.Failed != 0 || rep.Bytes == 0 {
				t.Fatalf("first pass: %+v, err %v", rep, rep.Err())
			}
			jr := rep.Jobs[0]
			if jr.Name != "app" || jr.Listed != 6 || jr.Selected != 3 || len(jr.Items) != 3 {
				t.Errorf("job report %+v", jr)
			}
			if got, want := tags(t, dst), []string{"1.0.0", "1.1.0", "v1.2.0"}; !slices.Equal(got, want) {
				t.Fatalf("target tags %v, want %v", got, want)
			}
			for tg, want := range map[string]string{"1.0.0": idx, "1.1.0": v11, "v1.2.0": v12} {
				if got := digestOf(t, dst+":"+tg); got != want {
					t.Errorf("%s: digest %s, want %s", tg, got, want)
				}
			}
			for _, c := range children {
				digestOf(t, dst+"@"+c) // every platform is there
			}
			for d, want := range map[string]cosign.Format{idx: cosign.FormatBundle, v11: cosign.FormatLegacy, v12: cosign.FormatBundle} {
				f, err := key.verify(t, dst, d)
				if err != nil || f != want {
					t.Errorf("verify %s at the target: %v, %v; want %v", d, f, err, want)
				}
			}
			// The legacy signature of the index came along as its tag.
			digestOf(t, dst+":sha256-"+strings.TrimPrefix(idx, "sha256:")+".sig")

			down.resetCounts()
			rep = s.Once(context.Background())
			if !rep.OK() || rep.Copied != 0 || rep.UpToDate != 3 || rep.Bytes != 0 {
				t.Fatalf("second pass: %+v", rep)
			}
			if w, _ := down.counts(); w != 0 {
				t.Errorf("an up-to-date pass made %d write requests to the target", w)
			}

			v13 := pushImage(t, src+":1.3.0")
			rep = s.Once(context.Background())
			if !rep.OK() || rep.Copied != 1 || rep.UpToDate != 3 {
				t.Fatalf("third pass: %+v", rep)
			}
			for _, it := range rep.Jobs[0].Items {
				if (it.Status == StatusCopied) != (it.Source == src+":1.3.0") {
					t.Errorf("item %+v", it)
				}
			}
			if got := digestOf(t, dst+":1.3.0"); got != v13 {
				t.Errorf("1.3.0 at the target: %s, want %s", got, v13)
			}
		})
	}
}

// TestSyncSignatureAddedLater: a signature added upstream to a digest the
// target already has is copied, though the tag did not move.
func TestSyncSignatureAddedLater(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			up, down := startRegistry(t, m.upstream), startRegistry(t, m.downstream)
			src, dst := up.host+"/acme/app", down.host+"/acme/app"
			d := pushImage(t, src+":1.0.0")
			s := newSyncer(t, fmt.Sprintf("jobs:\n  - {source: %s, targets: [%s], tags: ['1.0.0']}\n", src, dst))
			if rep := s.Once(context.Background()); rep.Copied != 1 {
				t.Fatalf("first pass: %+v", rep)
			}
			key := newKey(t)
			if _, err := key.verify(t, dst, d); err == nil {
				t.Fatal("unsigned artifact verifies")
			}
			for _, f := range []cosign.Format{cosign.FormatLegacy, cosign.FormatBundle} {
				key.sign(t, src, d, f)
				rep := s.Once(context.Background())
				if !rep.OK() || rep.Copied != 1 {
					t.Fatalf("after signing (%v): %+v %v", f, rep, rep.Err())
				}
				if got, err := key.verify(t, dst, d); err != nil || got != f && f == cosign.FormatBundle {
					t.Errorf("verify after %v signature: %v, %v", f, got, err)
				}
			}
			if rep := s.Once(context.Background()); rep.Copied != 0 || rep.UpToDate != 1 {
				t.Fatalf("last pass: %+v", rep)
			}
		})
	}
}

// TestSyncLatestAndPrefix: latest keeps the newest N, and a prefix job maps
// each repository under the target prefix, to two targets.
func TestSyncLatestAndPrefix(t *testing.T) {
	up, down := startRegistry(t, true), startRegistry(t, false)
	for _, v := range []string{"1.0.0", "1.1.0", "1.2.0", "1.10.0"} {
		pushImage(t, up.host+"/acme/web:"+v)
	}
	pushImage(t, up.host+"/acme/charts/metrics:main-100")
	pushImage(t, up.host+"/acme/charts/metrics:main-99")
	pushImage(t, up.host+"/acme/charts/metrics:release")
	s := newSyncer(t, fmt.Sprintf(`
jobs:
  - name: web
    source: %[1]s/acme/web
    targets: [%[2]s/plant/web]
    semver: ">=1"
    latest: 2
  - name: charts
    source: %[1]s/acme
    repositories: [charts/metrics]
    targets: [%[2]s/a, %[2]s/b/c]
    filter: {pattern: '^main-(?P<n>[0-9]+)$', extract: '$n', order: numerical}
    latest: 1
`, up.host, down.host))
	rep := s.Once(context.Background())
	if !rep.OK() || rep.Copied != 4 {
		t.Fatalf("pass: %+v %v", rep, rep.Err())
	}
	for repo, want := range map[string][]string{
		"/plant/web":          {"1.10.0", "1.2.0"},
		"/a/charts/metrics":   {"main-100"},
		"/b/c/charts/metrics": {"main-100"},
	} {
		if got := tags(t, down.host+repo); !slices.Equal(got, want) {
			t.Errorf("%s: tags %v, want %v", repo, got, want)
		}
	}
}

// TestSyncFilterAll: a filter without latest selects every matching tag.
func TestSyncFilterAll(t *testing.T) {
	up, down := startRegistry(t, false), startRegistry(t, false)
	for _, v := range []string{"a", "b", "stable", "1.0"} {
		pushImage(t, up.host+"/x:"+v)
	}
	s := newSyncer(t, fmt.Sprintf("jobs:\n  - {source: %s/x, targets: [%s/x], filter: {pattern: '.*'}}\n", up.host, down.host))
	if rep := s.Once(context.Background()); !rep.OK() || rep.Copied != 4 {
		t.Fatalf("pass: %+v", rep)
	}
	if got := tags(t, down.host+"/x"); !slices.Equal(got, []string{"1.0", "a", "b", "stable"}) {
		t.Errorf("tags %v", got)
	}
}

// TestSyncReplicaChain: upstream → A → B → C in one pass, whatever the
// order of the jobs in the file; the next pass copies nothing.
func TestSyncReplicaChain(t *testing.T) {
	up, a, b, c := startRegistry(t, true), startRegistry(t, false), startRegistry(t, true), startRegistry(t, false)
	key := newKey(t)
	d := pushImage(t, up.host+"/acme/app:1.0.0")
	key.sign(t, up.host+"/acme/app", d, cosign.FormatBundle)
	s := newSyncer(t, fmt.Sprintf(`
jobs:
  - {name: b-to-c, source: %[3]s/acme, repositories: [app], targets: [%[4]s/acme], filter: {pattern: '.*'}}
  - {name: a-to-b, source: %[2]s/acme/app, targets: [%[3]s/acme/app], filter: {pattern: '.*'}}
  - {name: upstream, source: %[1]s/acme/app, targets: [%[2]s/acme/app], semver: '>=1'}
`, up.host, a.host, b.host, c.host))
	rep := s.Once(context.Background())
	if !rep.OK() || rep.Copied != 3 {
		t.Fatalf("pass: %+v %v", rep, rep.Err())
	}
	if names := []string{rep.Jobs[0].Name, rep.Jobs[1].Name, rep.Jobs[2].Name}; !slices.Equal(names, []string{"b-to-c", "a-to-b", "upstream"}) {
		t.Errorf("jobs reported in order %v, want file order", names)
	}
	for _, r := range []*testRegistry{a, b, c} {
		if got := digestOf(t, r.host+"/acme/app:1.0.0"); got != d {
			t.Errorf("%s: %s, want %s", r.host, got, d)
		}
		if _, err := key.verify(t, r.host+"/acme/app", d); err != nil {
			t.Errorf("verify at %s: %v", r.host, err)
		}
	}
	if rep := s.Once(context.Background()); rep.Copied != 0 || rep.UpToDate != 3 {
		t.Fatalf("second pass: %+v", rep)
	}
}

// TestSyncUpstreamDown: an upstream that does not answer fails its job,
// leaves the target as it was, and the other jobs go on.
func TestSyncUpstreamDown(t *testing.T) {
	for _, explicit := range []bool{false, true} {
		t.Run(fmt.Sprintf("explicit=%v", explicit), func(t *testing.T) {
			up, other, down := startRegistry(t, true), startRegistry(t, true), startRegistry(t, true)
			d1 := pushImage(t, up.host+"/acme/app:1.0.0")
			pushImage(t, other.host+"/acme/lib:1.0.0")
			sel := "semver: '>=1'"
			if explicit {
				sel = "tags: ['1.0.0']"
			}
			dst := down.host + "/app"
			s := newSyncer(t, fmt.Sprintf(`
jobs:
  - {name: app, source: %s/acme/app, targets: [%s], %s}
  - {name: lib, source: %s/acme/lib, targets: [%s/lib], tags: ['1.0.0']}
`, up.host, dst, sel, other.host, down.host))
			if rep := s.Once(context.Background()); !rep.OK() || rep.Copied != 2 {
				t.Fatalf("first pass: %+v %v", rep, rep.Err())
			}
			pushImage(t, up.host+"/acme/app:1.0.0") // moves the tag upstream
			up.srv.Listener.Close()                 // and the upstream stops answering
			up.srv.CloseClientConnections()

			rep := s.Once(context.Background())
			if rep.OK() {
				t.Fatalf("a pass with a dead upstream is OK: %+v", rep)
			}
			app, lib := rep.Jobs[0], rep.Jobs[1]
			if len(app.Errors) != 1 || !strings.Contains(app.Errors[0], up.host) || !strings.Contains(app.Errors[0], "connection refused") ||
				app.Copied+app.Failed+app.UpToDate != 0 {
				t.Errorf("app job: %+v", app)
			}
			if !errors.Is(rep.Err(), ErrUpstream) {
				t.Errorf("Err() = %v, want ErrUpstream", rep.Err())
			}
			if lib.UpToDate != 1 || len(lib.Errors) != 0 {
				t.Errorf("lib job: %+v", lib)
			}
			if got := digestOf(t, dst+":1.0.0"); got != d1 {
				t.Errorf("target changed to %s", got)
			}
			if got := tags(t, dst); !slices.Equal(got, []string{"1.0.0"}) {
				t.Errorf("target tags %v", got)
			}
		})
	}
}

// TestSyncExplicitTagMissing: an explicit tag missing upstream fails alone.
func TestSyncExplicitTagMissing(t *testing.T) {
	up, down := startRegistry(t, true), startRegistry(t, true)
	pushImage(t, up.host+"/app:1.0.0")
	s := newSyncer(t, fmt.Sprintf("jobs:\n  - {source: %s/app, targets: [%s/app], tags: ['1.0.0', nope]}\n", up.host, down.host))
	rep := s.Once(context.Background())
	if rep.OK() || rep.Copied != 1 || rep.Failed != 1 || !errors.Is(rep.Err(), ErrTagNotFound) {
		t.Fatalf("pass: %+v %v", rep, rep.Err())
	}
	for _, it := range rep.Jobs[0].Items {
		if it.Status == StatusFailed && !strings.Contains(it.Error, "nope") {
			t.Errorf("failed item does not name the tag: %+v", it)
		}
	}
}

// TestSyncTamperedBlob: bytes altered on the way from the upstream fail
// the copy, and the target tag is not written.
func TestSyncTamperedBlob(t *testing.T) {
	up, down := startRegistry(t, true), startRegistry(t, true)
	d := pushImage(t, up.host+"/app:1.0.0")
	layers := layerDigests(t, up.host+"/app@"+d)
	up.mu.Lock()
	up.tamper = layers[0]
	up.mu.Unlock()
	s := newSyncer(t, fmt.Sprintf("jobs:\n  - {source: %s/app, targets: [%s/app], tags: ['1.0.0']}\n", up.host, down.host))
	rep := s.Once(context.Background())
	if rep.OK() || rep.Failed != 1 || !errors.Is(rep.Err(), ErrCopy) {
		t.Fatalf("pass: %+v", rep)
	}
	if msg := rep.Jobs[0].Items[0].Error; !strings.Contains(msg, "digest mismatch") {
		t.Errorf("error %q does not say digest mismatch", msg)
	}
	if got := tags(t, down.host+"/app"); len(got) != 0 {
		t.Errorf("target has tags %v after a refused copy", got)
	}
}

// TestSyncRetag: an upstream tag moved to another digest is moved at the
// target, and a tag added to a synced digest costs no blob upload.
func TestSyncRetag(t *testing.T) {
	up, down := startRegistry(t, false), startRegistry(t, false)
	a := pushImage(t, up.host+"/app:stable")
	s := newSyncer(t, fmt.Sprintf("jobs:\n  - {source: %s/app, targets: [%s/app], filter: {pattern: '.*'}}\n", up.host, down.host))
	if rep := s.Once(context.Background()); rep.Copied != 1 {
		t.Fatalf("pass: %+v", rep)
	}
	tag(t, up.host+"/app", a, "v1")
	down.resetCounts()
	if rep := s.Once(context.Background()); rep.Copied != 1 || rep.UpToDate != 1 {
		t.Fatalf("pass: %+v", rep)
	}
	if _, blobs := down.counts(); blobs != 0 {
		t.Errorf("a new tag on a synced digest uploaded %d blobs", blobs)
	}
	b := pushImage(t, up.host+"/app:stable")
	if rep := s.Once(context.Background()); rep.Copied != 1 || rep.UpToDate != 1 {
		t.Fatalf("pass: %+v", rep)
	}
	if got := digestOf(t, down.host+"/app:stable"); got != b {
		t.Errorf("stable at the target: %s, want %s", got, b)
	}
	digestOf(t, down.host+"/app@"+a) // the old digest stays
}

// TestRunDaemon: Run passes every interval, follows a new tag, and returns
// when its context ends.
func TestRunDaemon(t *testing.T) {
	up, down := startRegistry(t, true), startRegistry(t, true)
	pushImage(t, up.host+"/app:1.0.0")
	cfg, err := Parse("mirror.yaml", fmt.Appendf(nil, "jobs:\n  - {source: %s/app, targets: [%s/app], semver: '>=1'}\n", up.host, down.host))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Jobs[0].Interval = 50 * time.Millisecond
	s := newSyncerFor(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	reports := make(chan *Report, 100)
	done := make(chan error)
	go func() { done <- s.Run(ctx, func(r *Report) { reports <- r }) }()
	if r := <-reports; r.Copied != 1 {
		t.Fatalf("first pass %+v", r)
	}
	d := pushImage(t, up.host+"/app:1.1.0")
	deadline := time.After(10 * time.Second)
	for copied := false; !copied; {
		select {
		case r := <-reports:
			copied = r.Copied == 1 && r.UpToDate == 1
		case <-deadline:
			t.Fatal("the new tag was not copied")
		}
	}
	if got := digestOf(t, down.host+"/app:1.1.0"); got != d {
		t.Errorf("1.1.0: %s", got)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestCascade: in daemon mode, a job fed by a job that copied runs in the
// same pass even when it is not due.
func TestCascade(t *testing.T) {
	up, a, b := startRegistry(t, true), startRegistry(t, true), startRegistry(t, true)
	pushImage(t, up.host+"/app:1.0.0")
	cfg, err := Parse("mirror.yaml", fmt.Appendf(nil, `
jobs:
  - {name: up, source: %s/app, targets: [%s/app], tags: ['1.0.0']}
  - {name: replica, source: %s/app, targets: [%s/app], tags: ['1.0.0'], interval: 1h}
`, up.host, a.host, a.host, b.host))
	if err != nil {
		t.Fatal(err)
	}
	s := newSyncerFor(t, cfg)
	rep := s.pass(context.Background(), []bool{true, false})
	if len(rep.Jobs) != 2 || rep.Copied != 2 {
		t.Fatalf("pass: %+v", rep)
	}
	rep = s.pass(context.Background(), []bool{true, false})
	if len(rep.Jobs) != 1 || rep.UpToDate != 1 {
		t.Fatalf("pass with nothing copied ran %d jobs: %+v", len(rep.Jobs), rep)
	}
}

func layerDigests(t *testing.T, s string) []string {
	t.Helper()
	img, err := remote.Image(ref(t, s))
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range m.Layers {
		out = append(out, l.Digest.String())
	}
	return out
}

// TestSyncReindex: a referrer the target has as a manifest but does not
// list (a copy interrupted before the fallback index was updated) is
// indexed again by the next pass.
func TestSyncReindex(t *testing.T) {
	for _, m := range modes {
		if m.downstream {
			continue // the registry indexes what it stores
		}
		t.Run(m.name, func(t *testing.T) {
			up, down := startRegistry(t, m.upstream), startRegistry(t, false)
			src, dst := up.host+"/app", down.host+"/app"
			key := newKey(t)
			d := pushImage(t, src+":1.0.0")
			key.sign(t, src, d, cosign.FormatBundle)
			s := newSyncer(t, fmt.Sprintf("jobs:\n  - {source: %s, targets: [%s], tags: ['1.0.0']}\n", src, dst))
			if rep := s.Once(context.Background()); rep.Copied != 1 {
				t.Fatalf("first pass: %+v", rep)
			}
			fallback := ref(t, dst+":sha256-"+strings.TrimPrefix(d, "sha256:"))
			if err := remote.Delete(fallback); err != nil {
				t.Fatalf("delete %s: %v", fallback, err)
			}
			if _, err := key.verify(t, dst, d); err == nil {
				t.Fatal("verifies without the fallback index")
			}
			if rep := s.Once(context.Background()); !rep.OK() || rep.Copied != 1 {
				t.Fatalf("second pass: %+v %v", rep, rep.Err())
			}
			if f, err := key.verify(t, dst, d); err != nil || f != cosign.FormatBundle {
				t.Errorf("verify after the pass: %v %v", f, err)
			}
			if rep := s.Once(context.Background()); rep.UpToDate != 1 {
				t.Fatalf("third pass: %+v", rep)
			}
		})
	}
}
