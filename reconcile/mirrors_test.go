package reconcile

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/source/oci"
)

// copyTo copies repo@digest from e's registry to m's, with its signatures
// (the referrers, found through the referrers fallback tag of the
// in-process registry) when sigs, and points tags at it there.
func (e *env) copyTo(m *env, repo, digest string, sigs bool, tags ...string) {
	e.t.Helper()
	ctx := context.Background()
	src, err := remote.NewRepository(e.host + "/" + repo)
	if err != nil {
		e.t.Fatal(err)
	}
	src.PlainHTTP = true
	dst, err := remote.NewRepository(m.host + "/" + repo)
	if err != nil {
		e.t.Fatal(err)
	}
	dst.PlainHTTP = true
	desc, err := src.Resolve(ctx, digest)
	if err != nil {
		e.t.Fatalf("resolve %s: %v", digest, err)
	}
	// Through memory: oras-go closes a registry response body used as an
	// upload body from two goroutines (a data race in its copy).
	mem := memory.New()
	for _, hop := range []struct {
		from oras.ReadOnlyGraphTarget
		to   oras.Target
	}{{src, mem}, {mem, dst}} {
		if sigs {
			err = oras.ExtendedCopyGraph(ctx, hop.from, hop.to, desc, oras.ExtendedCopyGraphOptions{})
		} else {
			err = oras.CopyGraph(ctx, hop.from, hop.to, desc, oras.CopyGraphOptions{})
		}
		if err != nil {
			e.t.Fatalf("copy %s@%s to the mirror: %v", repo, digest, err)
		}
	}
	for _, tag := range tags {
		if err := dst.Tag(ctx, desc, tag); err != nil {
			e.t.Fatalf("tag %s on the mirror: %v", tag, err)
		}
	}
}

// digestOrSignature matches the manifest paths a digest-only mirror may
// see: by digest, or the signature tags named after a digest.
var digestOrSignature = regexp.MustCompile(`/manifests/(sha256:[0-9a-f]{64}|sha256-[0-9a-f]{64}(\.sig)?)$`)

// tagRequests returns the tag requests e received since the n-th request:
// tag listings and manifests addressed by a tag that is not a signature
// tag.
func (e *env) tagRequests(n int) []string {
	var out []string
	for _, r := range e.requestsSince(n) {
		if strings.HasSuffix(r, "/tags/list") || strings.Contains(r, "/manifests/") && !digestOrSignature.MatchString(r) {
			out = append(out, r)
		}
	}
	return out
}

// registries is the registries: block naming m as the mirror of e's fleet.
func registries(e *env, extra string, mirrors ...*env) string {
	var ms []string
	for _, m := range mirrors {
		ms = append(ms, m.host+"/fleet")
	}
	return fmt.Sprintf("registries:\n  - source: %s/fleet\n    mirrors: [%s]\n%s", e.host, strings.Join(ms, ", "), extra)
}

func lastRev(t *testing.T, a *Agent, name string) store.Revision {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	ss := a.state.Source(name)
	if ss.Last == nil {
		t.Fatal("no revision recorded")
	}
	return *ss.Last
}

func TestMirrorServesArtifactAndSignatures(t *testing.T) {
	e, m := newEnv(t), newEnv(t)
	d1 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0})
	e.copyTo(m, "fleet/app", d1, true) // by digest only: no tag on the mirror
	cfg := e.config(registries(e, "", m), src{name: "app", repo: "fleet/app"})
	rec := newRecorder()
	a := newAgent(t, cfg, rec)

	n, mn := e.requestCount(), m.requestCount()
	r := one(t, poll(a, "app"), "applied", d1)
	want := store.Via{Tag: store.ViaSource, Manifest: m.host + "/fleet", Signatures: m.host + "/fleet", Layer: m.host + "/fleet"}
	if r.Via == nil || *r.Via != want {
		t.Errorf("result via = %+v, want %+v", r.Via, want)
	}
	ss := sourceState(t, cfg, "app")
	if ss.Applied.Via == nil || *ss.Applied.Via != want || ss.Applied.Mirror != m.host+"/fleet" {
		t.Errorf("state.json: mirror %q via %+v, want %+v", ss.Applied.Mirror, ss.Applied.Via, want)
	}
	// The source answered the tag alone; the mirror saw no tag request.
	if got := e.requestsSince(n); len(got) != 1 || got[0] != "HEAD /v2/fleet/app/manifests/stable" {
		t.Errorf("source requests = %q, want only the tag's HEAD", got)
	}
	if got := m.tagRequests(mn); len(got) > 0 {
		t.Errorf("digest-only mirror received tag requests: %q", got)
	}
	if m.requestCount() == mn {
		t.Error("the mirror received no request")
	}

	// An unchanged poll: one HEAD at the source, nothing at the mirror.
	n, mn = e.requestCount(), m.requestCount()
	r = one(t, poll(a, "app"), "unchanged", d1)
	if r.Via == nil || r.Via.Tag != store.ViaSource {
		t.Errorf("unchanged via = %+v", r.Via)
	}
	if got := e.requestsSince(n); len(got) != 1 || m.requestCount() != mn {
		t.Errorf("unchanged poll: source %q, mirror %q", got, m.requestsSince(mn))
	}
}

func TestMirrorDigestOnlyNeverSeesTags(t *testing.T) {
	// Semver and filter sources list tags: never on a digest-only mirror,
	// even when the mirror holds every tag.
	for name, ref := range map[string]string{"semver": `{semver: ">=1.0.0"}`, "tag": `{tag: "1.1.0"}`} {
		t.Run(name, func(t *testing.T) {
			e, m := newEnv(t), newEnv(t)
			v1 := e.push("fleet/app", "1.0.0", artifact{files: withState(nil), created: t0})
			v2 := e.push("fleet/app", "1.1.0", artifact{files: withState(nil), created: t0.Add(time.Hour)})
			e.copyTo(m, "fleet/app", v1, true, "1.0.0")
			e.copyTo(m, "fleet/app", v2, true, "1.1.0")
			cfg := e.config(registries(e, "", m), src{name: "app", repo: "fleet/app", ref: ref})
			a := newAgent(t, cfg, newRecorder())
			mn := m.requestCount()
			r := one(t, poll(a, "app"), "applied", v2)
			if r.Via == nil || r.Via.Tag != store.ViaSource || r.Via.Manifest != m.host+"/fleet" {
				t.Errorf("via = %+v", r.Via)
			}
			if got := m.tagRequests(mn); len(got) > 0 {
				t.Errorf("digest-only mirror received tag requests: %q", got)
			}
		})
	}
}

func TestMirrorTagNeedsSource(t *testing.T) {
	e, m := newEnv(t), newEnv(t)
	e.push("fleet/app", "stable", artifact{files: withState(nil)})
	// Parse refuses this configuration (see package config); the agent
	// refuses it too when built otherwise.
	cfg := e.config(registries(e, "", m), src{name: "app", repo: "fleet/app"})
	cfg.Registries[0].SourceFallback = false
	a := newAgent(t, cfg, newRecorder())
	n, mn := e.requestCount(), m.requestCount()
	r := one(t, poll(a, "app"), "error", "")
	for _, want := range []string{"allowTags: true", "sourceFallback: true", "pin it by digest"} {
		if !strings.Contains(r.Error, want) {
			t.Errorf("error %q lacks %q", r.Error, want)
		}
	}
	if e.requestCount() != n || m.requestCount() != mn {
		t.Errorf("requests were made: source %q, mirror %q", e.requestsSince(n), m.requestsSince(mn))
	}
}

func TestMirrorAllowTagsSourceUnreachable(t *testing.T) {
	e, m := newEnv(t), newEnv(t)
	d1 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0})
	e.copyTo(m, "fleet/app", d1, true, "stable")
	cfg := e.config(registries(e, "    allowTags: true\n    sourceFallback: false\n", m), src{name: "app", repo: "fleet/app"})
	e.srv.Close() // the device cannot reach the source at all
	a := newAgent(t, cfg, newRecorder())
	r := one(t, poll(a, "app"), "applied", d1)
	mp := m.host + "/fleet"
	if want := (store.Via{Tag: mp, Manifest: mp, Signatures: mp, Layer: mp}); r.Via == nil || *r.Via != want {
		t.Errorf("via = %+v, want %+v", r.Via, want)
	}
}

func TestMirrorSourceUnreachableDigestRef(t *testing.T) {
	// A digest needs no tag: a digest-only mirror serves everything while
	// the source is down, fallback on or off.
	for _, fallback := range []string{"", "    sourceFallback: false\n"} {
		t.Run(fmt.Sprintf("fallback=%v", fallback == ""), func(t *testing.T) {
			e, m := newEnv(t), newEnv(t)
			d1 := e.push("fleet/app", "stable", artifact{files: withState(nil)})
			e.copyTo(m, "fleet/app", d1, true)
			cfg := e.config(registries(e, fallback, m), src{name: "app", repo: "fleet/app", ref: "{digest: " + d1 + "}"})
			e.srv.Close()
			a := newAgent(t, cfg, newRecorder())
			one(t, poll(a, "app"), "applied", d1)
			if got := m.tagRequests(0); len(got) > 0 {
				t.Errorf("tag requests on the mirror: %q", got)
			}
		})
	}
}

func TestMirror404NextEndpoint(t *testing.T) {
	// Mirror a is empty, b has the artifact without its signatures: the
	// manifest and layer come from b, the signatures from the source.
	e, ma, mb := newEnv(t), newEnv(t), newEnv(t)
	d1 := e.push("fleet/app", "stable", artifact{files: withState(nil)})
	e.copyTo(mb, "fleet/app", d1, false)
	cfg := e.config(registries(e, "", ma, mb), src{name: "app", repo: "fleet/app"})
	a := newAgent(t, cfg, newRecorder())
	r := one(t, poll(a, "app"), "applied", d1)
	want := store.Via{Tag: store.ViaSource, Manifest: mb.host + "/fleet", Signatures: store.ViaSource, Layer: mb.host + "/fleet"}
	if r.Via == nil || *r.Via != want {
		t.Errorf("via = %+v, want %+v", r.Via, want)
	}
	if ma.requestCount() == 0 {
		t.Error("the first mirror was not tried")
	}
	if got := ma.tagRequests(0); len(got) > 0 {
		t.Errorf("tag requests on mirror a: %q", got)
	}

	// Without the source, b's missing signatures are a refusal, naming
	// what each registry answered.
	e2, mc := newEnv(t), newEnv(t)
	d2 := e2.push("fleet/app", "stable", artifact{files: withState(nil)})
	e2.copyTo(mc, "fleet/app", d2, false, "stable")
	cfg = e2.config(registries(e2, "    allowTags: true\n    sourceFallback: false\n", mc), src{name: "app", repo: "fleet/app"})
	a = newAgent(t, cfg, newRecorder())
	r = one(t, poll(a, "app"), "refused", d2)
	if !strings.Contains(r.Error, "no signature") || !strings.Contains(r.Error, "sourceFallback is off") {
		t.Errorf("error = %q", r.Error)
	}
}

func TestMirrorSignatureUnreadableIsNotRefusal(t *testing.T) {
	// The mirror has the artifact but not its signatures, and the source
	// cannot be reached: the signature may exist, so the reconcile fails
	// as an error (tried again), not as a refusal.
	e, m := newEnv(t), newEnv(t)
	d1 := e.push("fleet/app", "stable", artifact{files: withState(nil)})
	e.copyTo(m, "fleet/app", d1, false)
	cfg := e.config(registries(e, "", m), src{name: "app", repo: "fleet/app", ref: "{digest: " + d1 + "}"})
	e.srv.Close()
	a := newAgent(t, cfg, newRecorder())
	r := one(t, poll(a, "app"), "error", d1)
	if !strings.Contains(r.Error, "mirror "+m.host) || !strings.Contains(r.Error, "source "+e.host) {
		t.Errorf("error does not name both registries: %q", r.Error)
	}
}

func TestMirrorStaleTagRefused(t *testing.T) {
	t.Run("created", func(t *testing.T) {
		e, m := newEnv(t), newEnv(t)
		old := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0})
		cur := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0.Add(time.Hour)})
		e.copyTo(m, "fleet/app", old, true)
		e.copyTo(m, "fleet/app", cur, true, "stable")
		cfg := e.config(registries(e, "    allowTags: true\n    sourceFallback: false\n", m), src{name: "app", repo: "fleet/app"})
		rec := newRecorder()
		a := newAgent(t, cfg, rec)
		one(t, poll(a, "app"), "applied", cur)

		// The mirror's tag goes back to the older signed revision.
		e.copyTo(m, "fleet/app", old, true, "stable")
		r := one(t, poll(a, "app"), "refused", old)
		for _, want := range []string{"downgrade refused", "mirror " + m.host + "/fleet", "stale"} {
			if !strings.Contains(r.Error, want) {
				t.Errorf("error %q lacks %q", r.Error, want)
			}
		}
		if rec.count() != 1 || current(t, a, "app") != cur || a.store.Has(old) {
			t.Error("a stale tag of the mirror rolled the device back")
		}
	})
	t.Run("semver", func(t *testing.T) {
		e, m := newEnv(t), newEnv(t)
		v1 := e.push("fleet/app", "1.0.0", artifact{files: withState(nil)})
		v2 := e.push("fleet/app", "2.0.0", artifact{files: withState(nil)})
		e.copyTo(m, "fleet/app", v1, true, "1.0.0")
		// The source applies 2.0.0 first; then the device only reaches a
		// mirror that never received 2.0.0.
		cfg := e.config("", src{name: "app", repo: "fleet/app", ref: `{semver: ">=1.0.0"}`})
		rec := newRecorder()
		a := newAgent(t, cfg, rec)
		one(t, poll(a, "app"), "applied", v2)
		cfg = e.config(registries(e, "    allowTags: true\n    sourceFallback: false\n", m), src{name: "app", repo: "fleet/app", ref: `{semver: ">=1.0.0"}`})
		a = newAgent(t, cfg, rec)
		r := one(t, poll(a, "app"), "refused", v1)
		if !strings.Contains(r.Error, "downgrade refused") || !strings.Contains(r.Error, "mirror "+m.host) {
			t.Errorf("error = %q", r.Error)
		}
		if rec.count() != 1 || current(t, a, "app") != v2 {
			t.Error("a stale tag list of the mirror rolled the device back")
		}
	})
}

func TestMirrorDigestMismatchIsRefusal(t *testing.T) {
	// The mirror serves other bytes under the digest: refused at once, the
	// source (which has the right bytes) is not asked.
	for _, what := range []string{"manifest", "layer"} {
		t.Run(what, func(t *testing.T) {
			e, m := newEnv(t), newEnv(t)
			d1 := e.push("fleet/app", "stable", artifact{files: withState(nil)})
			e.copyTo(m, "fleet/app", d1, true)
			var layer string
			{
				_, man, err := e.client.Manifest(context.Background(), oci.Reference{Registry: e.host, Repository: "fleet/app", Digest: d1})
				if err != nil {
					t.Fatal(err)
				}
				layer = man.Layers[0].Digest.String()
			}
			target := "/v2/fleet/app/manifests/" + d1
			if what == "layer" {
				target = "/v2/fleet/app/blobs/" + layer
			}
			tamper := func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method != http.MethodGet || r.URL.Path != target {
					return false
				}
				rec := &captureWriter{header: http.Header{}}
				m.srvHandler().ServeHTTP(rec, r)
				body := rec.body.Bytes()
				if len(body) > 0 {
					body[len(body)/2] ^= 0xff // same size, other bytes
				}
				for k, v := range rec.header {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.status)
				_, _ = w.Write(body)
				return true
			}
			m.intercept.Store(&tamper)
			cfg := e.config(registries(e, "", m), src{name: "app", repo: "fleet/app"})
			a := newAgent(t, cfg, newRecorder())
			n := e.requestCount()
			r := one(t, poll(a, "app"), "refused", d1)
			if !strings.Contains(r.Error, "digest mismatch") {
				t.Errorf("error = %q", r.Error)
			}
			if what == "layer" && !strings.Contains(r.Error, layer) {
				t.Errorf("error does not name the blob %s: %q", layer, r.Error)
			}
			for _, req := range e.requestsSince(n) {
				if strings.Contains(req, "/blobs/") || strings.Contains(req, "/manifests/"+d1) && what == "manifest" {
					t.Errorf("fell back to the source after a digest mismatch: %s", req)
				}
			}
		})
	}
}

// captureWriter records a response.
type captureWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (c *captureWriter) Header() http.Header { return c.header }
func (c *captureWriter) WriteHeader(s int) {
	if c.status == 0 {
		c.status = s
	}
}

func (c *captureWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return c.body.Write(b)
}

var _ io.Writer = (*captureWriter)(nil)

func TestMirrorNotifyRepository(t *testing.T) {
	e, m := newEnv(t), newEnv(t)
	cfg := e.config(registries(e, "", m), src{name: "app", repo: "fleet/app"})
	a := newAgent(t, cfg, newRecorder())
	ctx := context.Background()
	if hit := a.NotifyRepository(ctx, m.host, "fleet/app", "", ""); len(hit) != 1 {
		t.Errorf("a push to the mirror's copy triggered %v", hit)
	}
	if hit := a.NotifyRepository(ctx, m.host, "fleet/other", "", ""); len(hit) != 0 {
		t.Errorf("a push to another repository of the mirror triggered %v", hit)
	}
}

// TestReconcileDeadline: every endpoint hangs on the manifest; each
// attempt is bounded by timeout, and the whole reconcile by
// reconcileTimeout, which ends the search before the last endpoints are
// tried and says so.
func TestReconcileDeadline(t *testing.T) {
	e := newEnv(t)
	d := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0})
	ms := []*env{newEnv(t), newEnv(t), newEnv(t)}
	var mu sync.Mutex
	var hung []string
	hang := func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/manifests/sha256:") {
			return false
		}
		mu.Lock()
		hung = append(hung, r.Host)
		mu.Unlock()
		<-r.Context().Done()
		return true
	}
	for _, m := range append(ms, e) {
		m.intercept.Store(&hang)
	}
	cfg := e.config(registries(e, "", ms...), src{name: "app", repo: "fleet/app"})
	cfg.Sources[0].Timeout, cfg.Sources[0].ReconcileTimeout = 300*time.Millisecond, 700*time.Millisecond
	a := newAgent(t, cfg, newRecorder())
	r := one(t, poll(a, "app"), "error", d)
	if !strings.Contains(r.Error, "reconcileTimeout 700ms") {
		t.Errorf("error %q does not name the deadline", r.Error)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(hung) == 0 || len(hung) > 3 || slices.Contains(hung, e.host) {
		t.Errorf("manifest requests reached %v: the deadline should stop the search before the source", hung)
	}
	if got := current(t, a, "app"); got != "" {
		t.Errorf("current = %s after a failed reconcile, want nothing", got)
	}
}
