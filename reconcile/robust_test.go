package reconcile

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/source/oci"
)

// TestMissingRevisionIsFetchedAgain: a revision that vanished from the
// store (removed as incomplete at start-up) is not "unchanged" although
// state.json and current name it: it is pulled and applied again.
func TestMissingRevisionIsFetchedAgain(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("", src{name: "app", repo: "fleet/app"})
	rec := newRecorder()
	a := newAgent(t, cfg, rec)
	d := e.push("fleet/app", "stable", artifact{files: withState(nil)})
	one(t, poll(a, "app"), "applied", d)
	dir, _ := a.store.RevisionDir(d)
	if err := os.Remove(dir + ".complete"); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	one(t, poll(a, "app"), "applied", d)
	if _, err := os.Stat(filepath.Join(a.store.CurrentDir("app"), "berth.yaml")); err != nil {
		t.Fatalf("current revision not restored: %v", err)
	}
	if !a.store.Has(d) {
		t.Fatal("the revision has no completion record")
	}
}

// cut answers GET requests of path from h with half the body, then closes
// the connection: a truncated body.
func cut(h http.Handler, path string, count *atomic.Int64) func(http.ResponseWriter, *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || r.URL.Path != path {
			return false
		}
		if count != nil && count.Add(-1) < 0 {
			return false
		}
		rec := &captureWriter{header: http.Header{}}
		h.ServeHTTP(rec, r)
		body := rec.body.Bytes()
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(rec.status)
		_, _ = w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
		return true
	}
}

// cutUnresumable is cut for the first GET of path, and answers the first
// downloadResumes Range requests of it 404, as if the blob were gone from
// the endpoint, so that a download is cut off for good; ranges counts the
// Range requests.
func cutUnresumable(h http.Handler, path string, ranges *atomic.Int64) func(http.ResponseWriter, *http.Request) bool {
	var left, missing atomic.Int64
	left.Store(1)
	missing.Store(downloadResumes)
	c := cut(h, path, &left)
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == path && r.Header.Get("Range") != "" {
			ranges.Add(1)
			if missing.Add(-1) >= 0 {
				http.NotFound(w, r)
				return true
			}
		}
		return c(w, r)
	}
}

// layerOf returns the content layer digest of repo@d.
func (e *env) layerOf(repo, d string) string {
	e.t.Helper()
	_, m, err := e.client.Manifest(context.Background(), oci.Reference{Registry: e.host, Repository: repo, Digest: d})
	if err != nil {
		e.t.Fatal(err)
	}
	return m.Layers[0].Digest.String()
}

// TestTruncatedIsErrorNextMirrorTried: a mirror whose answers are cut
// short is a transport failure: the source serves instead, and with no
// endpoint left the outcome is error, not refused, and the digest is not
// put on backoff (issue 11).
func TestTruncatedIsErrorNextMirrorTried(t *testing.T) {
	for _, what := range []string{"manifest", "layer"} {
		t.Run(what, func(t *testing.T) {
			e, m := newEnv(t), newEnv(t)
			d := e.push("fleet/app", "stable", artifact{files: withState(map[string]string{"big": strings.Repeat("x", 64<<10)}), created: t0})
			e.copyTo(m, "fleet/app", d, true)
			path := "/v2/fleet/app/manifests/" + d
			if what == "layer" {
				path = "/v2/fleet/app/blobs/" + e.layerOf("fleet/app", d)
			}
			// The mirror cuts every answer: the source serves.
			mc := cut(m.srvHandler(), path, nil)
			m.intercept.Store(&mc)
			cfg := e.config(registries(e, "", m), src{name: "app", repo: "fleet/app"})
			a := newAgent(t, cfg, newRecorder())
			r := one(t, poll(a, "app"), "applied", d)
			field := r.Via.Manifest
			if what == "layer" {
				field = r.Via.Layer
			}
			if field != store.ViaSource {
				t.Errorf("the %s came from %q, want the source after the mirror failed", what, field)
			}

			// Only the source, cutting every answer: error, not refused.
			d2 := e.push("fleet/app", "stable", artifact{files: withState(map[string]string{"big": strings.Repeat("y", 64<<10)}), created: t0.Add(time.Hour)})
			path2 := "/v2/fleet/app/manifests/" + d2
			if what == "layer" {
				path2 = "/v2/fleet/app/blobs/" + e.layerOf("fleet/app", d2)
			}
			ec := cut(e.srvHandler(), path2, nil)
			e.intercept.Store(&ec)
			cfg = e.config("", src{name: "app", repo: "fleet/app"})
			a = newAgent(t, cfg, newRecorder())
			r = one(t, poll(a, "app"), "error", d2)
			if !strings.Contains(r.Error, "truncated") || strings.Contains(r.Error, "digest mismatch") {
				t.Errorf("error = %q, want a truncated body, not a mismatch", r.Error)
			}
			if ss := sourceState(t, cfg, "app"); ss.FailedDigest != "" || current(t, a, "app") != d {
				t.Errorf("after a transport error: failed digest %q, current %s", ss.FailedDigest, short(current(t, a, "app")))
			}
			// The fault lifts: the next poll applies.
			e.intercept.Store(nil)
			one(t, poll(a, "app"), "applied", d2)
		})
	}
}

// TestLayerResumedAcrossReconciles: a layer download cut off for good is
// kept in the partial folder and resumed by the next reconcile with a
// Range request.
func TestLayerResumedAcrossReconciles(t *testing.T) {
	e := newEnv(t)
	d := e.push("fleet/app", "stable", artifact{files: withState(map[string]string{"big": randomText(t, 2<<20)})})
	path := "/v2/fleet/app/blobs/" + e.layerOf("fleet/app", d)
	// The first pull: the GET is cut, every resume finds nothing.
	var ranges atomic.Int64
	counting := cutUnresumable(e.srvHandler(), path, &ranges)
	e.intercept.Store(&counting)
	cfg := e.config("", src{name: "app", repo: "fleet/app"})
	a := newAgent(t, cfg, newRecorder())
	one(t, poll(a, "app"), "error", d)
	parts, _ := os.ReadDir(a.store.PartialDir())
	if len(parts) != 2 {
		t.Fatalf("partial folder holds %d files after a cut download, want the blob and its state", len(parts))
	}
	before := ranges.Load()
	one(t, poll(a, "app"), "applied", d)
	if ranges.Load() <= before {
		t.Error("the second reconcile did not resume with a Range request")
	}
	if parts, _ := os.ReadDir(a.store.PartialDir()); len(parts) != 0 {
		t.Errorf("partial folder holds %d files after the blob verified", len(parts))
	}
}

// randomText is n bytes that do not compress.
func randomText(t *testing.T, n int) string {
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestCapsNamedInErrors: a cap met says which agent.yaml field raises it.
func TestCapsNamedInErrors(t *testing.T) {
	e := newEnv(t)
	d := e.push("fleet/app", "v1.0.0", artifact{files: withState(nil)})
	for i := range 5 {
		e.push("fleet/app", fmt.Sprintf("v0.0.%d", i), artifact{files: withState(nil), unsigned: true})
	}
	cfg := e.config("", src{name: "app", repo: "fleet/app", ref: `{semver: ">=1.0.0"}`, extra: "    limits: {maxTags: 3}"})
	r := one(t, poll(newAgent(t, cfg, newRecorder()), "app"), "error", "")
	if !strings.Contains(r.Error, "more than 3 tags, the cap") || !strings.Contains(r.Error, "limits.maxTags") {
		t.Errorf("error = %q", r.Error)
	}
	cfg = e.config("", src{name: "app", repo: "fleet/app", ref: `{semver: ">=1.0.0"}`, extra: "    limits: {maxTags: 10}"})
	one(t, poll(newAgent(t, cfg, newRecorder()), "app"), "applied", d)
}

// TestDiskPreflight: a download that would leave less than minFreeSpace is
// not started, with an error saying so; the applied revision stays.
func TestDiskPreflight(t *testing.T) {
	e := newEnv(t)
	d := e.push("fleet/app", "stable", artifact{files: withState(nil)})
	cfg := e.config("minFreeSpace: 90%", src{name: "app", repo: "fleet/app"})
	a := newAgent(t, cfg, newRecorder())
	n := e.requestCount()
	r := one(t, poll(a, "app"), "error", d)
	if !strings.Contains(r.Error, "not enough free disk space") || !strings.Contains(r.Error, "minFreeSpace") {
		t.Errorf("error = %q", r.Error)
	}
	for _, req := range e.requestsSince(n) {
		if strings.Contains(req, "/blobs/") && strings.HasPrefix(req, "GET") && !strings.Contains(req, "sha256:") {
			t.Errorf("blob fetched despite the pre-flight: %s", req)
		}
	}
	if current(t, a, "app") != "" {
		t.Error("something was applied")
	}
}

// TestMaxBandwidth: the global cap holds a download back (here past the
// timeout: what came is kept), and a source's own cap replaces it.
func TestMaxBandwidth(t *testing.T) {
	e := newEnv(t)
	d := e.push("fleet/app", "stable", artifact{files: withState(map[string]string{"big": randomText(t, 256<<10)})})
	cfg := e.config("maxBandwidth: 8KiB", src{name: "app", repo: "fleet/app", extra: "    timeout: 2s"})
	a := newAgent(t, cfg, newRecorder())
	r := one(t, poll(a, "app"), "error", d)
	if !strings.Contains(r.Error, "context deadline exceeded") {
		t.Errorf("capped at 8 KiB/s, 256 KiB in 2s: %q", r.Error)
	}
	if parts, _ := os.ReadDir(a.store.PartialDir()); len(parts) != 2 {
		t.Errorf("%d files in the partial folder, want the blob received so far and its state", len(parts))
	}
	cfg = e.config("maxBandwidth: 8KiB", src{name: "app", repo: "fleet/app", extra: "    timeout: 20s\n    maxBandwidth: 64MiB"})
	one(t, poll(newAgent(t, cfg, newRecorder()), "app"), "applied", d)
}

// TestStartupCollects: revisions a crash kept beyond what the recorded
// state keeps are collected when the agent starts.
func TestStartupCollects(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("keepRevisions: 2", src{name: "app", repo: "fleet/app"})
	a := newAgent(t, cfg, newRecorder())
	d1 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0})
	one(t, poll(a, "app"), "applied", d1)
	d2 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0.Add(time.Hour)})
	one(t, poll(a, "app"), "applied", d2)
	if !a.store.Has(d1) {
		t.Fatal("keepRevisions 2 collected the previous revision")
	}
	cfg = e.config("keepRevisions: 1", src{name: "app", repo: "fleet/app"})
	a = newAgent(t, cfg, newRecorder())
	if a.store.Has(d1) || !a.store.Has(d2) {
		t.Errorf("after a start with keepRevisions 1: old present %v, current present %v", a.store.Has(d1), a.store.Has(d2))
	}
}
