package reconcile

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/state"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func TestFirstApplyThenUpgrade(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("", src{name: "app", repo: "fleet/app"})
	rec := newRecorder()
	a := newAgent(t, cfg, rec)
	rec.attach(a)

	d1 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0})
	one(t, poll(a, "app"), "applied", d1)

	c := rec.last(t)
	if rec.count() != 1 || c.prev != nil {
		t.Fatalf("first apply: %d calls, prev %+v; want 1 call with prev nil", rec.count(), c.prev)
	}
	dir1, _ := a.store.RevisionDir(d1)
	switch {
	case c.rev.Source != "app" || c.rev.Digest != d1 || c.rev.Dir != dir1:
		t.Errorf("rev = %+v, want source app, digest %s, dir %s", c.rev, d1, dir1)
	case c.serial == "" || strings.HasPrefix(c.serial, "error"):
		t.Errorf("rev.Dir does not hold the artifact's files: %q", c.serial)
	case c.rev.State == nil || len(c.rev.State.Apps) != 1 || c.rev.State.Apps[0].Name != "web" || c.rev.State.Apps[0].Compose == nil:
		t.Errorf("rev.State = %+v, want berth.yaml's app web", c.rev.State)
	case c.current != d1:
		t.Errorf("current during Apply = %s, want %s", short(c.current), short(d1))
	case c.rev.Extensions != nil:
		t.Errorf("rev.Extensions = %v, want none", c.rev.Extensions)
	}
	if b, err := os.ReadFile(filepath.Join(dir1, "apps", "web", "compose.yaml")); err != nil || !bytes.Contains(b, []byte("nginx")) {
		t.Errorf("revision folder lacks the compose file: %q %v", b, err)
	}
	if got := current(t, a, "app"); got != d1 {
		t.Errorf("current = %s, want %s", short(got), short(d1))
	}
	ss := sourceState(t, cfg, "app")
	switch {
	case ss.Applied == nil || ss.Applied.Digest != d1 || ss.Applied.Outcome != store.OutcomeApplied:
		t.Fatalf("state.json applied = %+v", ss.Applied)
	case ss.Applied.Tag != "stable" || !ss.Applied.Created.Equal(t0) || ss.Applied.Annotations[ocispec.AnnotationRevision] == "":
		t.Errorf("applied revision details = %+v", ss.Applied)
	case !strings.Contains(ss.Applied.URL, "fleet/app:stable@"+d1):
		t.Errorf("applied URL = %s", ss.Applied.URL)
	case !slices.ContainsFunc(ss.Applied.Apps, func(a state.AppStatus) bool { return a.Kind == "test" && a.Outcome == "applied" }):
		t.Errorf("applied apps = %+v", ss.Applied.Apps)
	case len(ss.History) != 1 || ss.LastSuccess.IsZero() || ss.Failures != 0:
		t.Errorf("state = %+v", ss)
	}

	// A second revision without berth.yaml (a plain Flux artifact).
	d2 := e.push("fleet/app", "stable", artifact{files: map[string]string{"README": "no state"}, created: t0.Add(time.Hour)})
	one(t, poll(a, "app"), "applied", d2)
	c = rec.last(t)
	dir2, _ := a.store.RevisionDir(d2)
	switch {
	case rec.count() != 2:
		t.Fatalf("%d calls, want 2", rec.count())
	case c.rev.Digest != d2 || c.rev.Dir != dir2 || c.rev.State != nil:
		t.Errorf("rev = %+v, want %s in %s with no state", c.rev, short(d2), dir2)
	case c.prev == nil:
		t.Fatal("prev = nil on the second apply")
	case c.prev.Digest != d1 || c.prev.Dir != dir1 || c.prev.Source != "app":
		t.Errorf("prev = %+v, want the first revision", c.prev)
	case c.prev.State == nil || c.prev.State.Apps[0].Name != "web":
		t.Errorf("prev.State = %+v, want the first berth.yaml", c.prev.State)
	}
	if got := current(t, a, "app"); got != d2 {
		t.Errorf("current = %s, want %s", short(got), short(d2))
	}
	ss = sourceState(t, cfg, "app")
	if ss.Applied.Digest != d2 || len(ss.History) != 2 || ss.History[0].Digest != d2 || ss.History[1].Digest != d1 {
		t.Errorf("history = %+v, want d2 then d1", ss.History)
	}
	st := a.Status()
	if len(st.Sources) != 1 || st.Sources[0].Applied == nil || st.Sources[0].Applied.Digest != d2 || st.Sources[0].Ref != "tag stable" {
		t.Errorf("Status = %+v", st)
	}
}

func TestApplyFailureSwitchesBackAndBacksOff(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("", src{name: "app", repo: "fleet/app"})
	rec := newRecorder()
	a := newAgent(t, cfg, rec)
	rec.attach(a)
	ctx := context.Background()

	d1 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0})
	one(t, poll(a, "app"), "applied", d1)
	wantLastOutcome(t, a, "app", d1, "applied")

	d2 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0.Add(time.Hour)})
	rec.setFail(d2, errors.New("compose up: boom"))
	before := time.Now()
	r := one(t, poll(a, "app"), "failed", d2)
	if !strings.Contains(r.Error, "boom") || !strings.Contains(r.Error, "test") {
		t.Errorf("error %q does not carry the applier's error and kind", r.Error)
	}
	c := rec.last(t)
	if rec.count() != 2 || c.rev.Digest != d2 || c.prev == nil || c.prev.Digest != d1 {
		t.Fatalf("Apply calls = %d, last rev %s prev %+v", rec.count(), short(c.rev.Digest), c.prev)
	}
	if c.current != d2 {
		t.Errorf("current during the failed Apply = %s, want the new %s", short(c.current), short(d2))
	}
	if got := current(t, a, "app"); got != d1 {
		t.Fatalf("current = %s after a failed apply, want it switched back to %s", short(got), short(d1))
	}
	ss := sourceState(t, cfg, "app")
	switch {
	case ss.Applied == nil || ss.Applied.Digest != d1:
		t.Errorf("applied = %+v, want still %s", ss.Applied, short(d1))
	case ss.FailedDigest != d2 || ss.Failures != 1:
		t.Errorf("failedDigest %s failures %d", short(ss.FailedDigest), ss.Failures)
	case !ss.RetryAfter.After(before):
		t.Errorf("retryAfter = %v, want after %v", ss.RetryAfter, before)
	case ss.Last == nil || ss.Last.Outcome != store.OutcomeFailed || ss.Last.Error == "" || !slices.ContainsFunc(ss.Last.Apps, func(a state.AppStatus) bool { return a.Kind == "test" && a.Outcome == "failed" }):
		t.Errorf("last = %+v", ss.Last)
	case ss.History[0].Digest != d2 || ss.History[0].Outcome != store.OutcomeFailed:
		t.Errorf("history[0] = %+v", ss.History[0])
	}
	// Fleet status and the circuit breaker read the failure from here.
	wantLastOutcome(t, a, "app", d2, "failed")

	// The failed digest is not attempted again while backing off.
	r = one(t, poll(a, "app"), "backoff", d2)
	if rec.count() != 2 {
		t.Fatalf("Apply called while backing off (%d calls)", rec.count())
	}
	if !strings.Contains(r.Error, "backing off") {
		t.Errorf("backoff result error = %q", r.Error)
	}

	// ReconcileNow forces a new attempt.
	res, err := a.ReconcileNow(ctx, "app", api.ReconcileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	one(t, res, "failed", d2)
	if rec.count() != 3 {
		t.Fatalf("ReconcileNow did not retry the failed digest (%d calls)", rec.count())
	}
	if ss := sourceState(t, cfg, "app"); ss.Failures != 2 || ss.FailedDigest != d2 {
		t.Errorf("after the forced retry failures = %d, failedDigest = %s", ss.Failures, short(ss.FailedDigest))
	}
	one(t, poll(a, "app"), "backoff", d2)

	// Once the backoff expires, the digest is tried again.
	a.mu.Lock()
	a.state.Source("app").RetryAfter = time.Now().Add(-time.Second)
	a.mu.Unlock()
	one(t, poll(a, "app"), "failed", d2)
	if rec.count() != 4 {
		t.Fatalf("expired backoff did not retry (%d calls)", rec.count())
	}

	// A new digest is attempted at once, backoff or not.
	rec.setFail(d2, nil)
	d3 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0.Add(2 * time.Hour)})
	one(t, poll(a, "app"), "applied", d3)
	c = rec.last(t)
	if c.rev.Digest != d3 || c.prev == nil || c.prev.Digest != d1 {
		t.Errorf("rev %s prev %+v, want d3 over d1", short(c.rev.Digest), c.prev)
	}
	ss = sourceState(t, cfg, "app")
	if ss.Failures != 0 || ss.FailedDigest != "" || !ss.RetryAfter.IsZero() || ss.Applied.Digest != d3 {
		t.Errorf("after success: %+v", ss)
	}
	if got := current(t, a, "app"); got != d3 {
		t.Errorf("current = %s, want %s", short(got), short(d3))
	}
}

func TestFailedFirstApply(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("", src{name: "app", repo: "fleet/app"})
	rec := newRecorder()
	rec.setFailAll(errors.New("no docker"))
	a := newAgent(t, cfg, rec)
	d1 := e.push("fleet/app", "stable", artifact{files: withState(nil)})
	one(t, poll(a, "app"), "failed", d1)
	if c := rec.last(t); c.prev != nil {
		t.Errorf("prev = %+v on the first apply", c.prev)
	}
	ss := sourceState(t, cfg, "app")
	if ss.Applied != nil || ss.FailedDigest != d1 {
		t.Errorf("state = %+v", ss)
	}
	one(t, poll(a, "app"), "backoff", d1)
	rec.setFailAll(nil)
	res, _ := a.ReconcileNow(context.Background(), "app", api.ReconcileOptions{})
	one(t, res, "applied", d1)
	if c := rec.last(t); c.prev != nil {
		t.Errorf("prev = %+v, want nil: nothing was ever applied", c.prev)
	}
}

func TestUnchangedDoesNotApplyOrWrite(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("", src{name: "app", repo: "fleet/app"})
	rec := newRecorder()
	a := newAgent(t, cfg, rec)
	d1 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0})
	one(t, poll(a, "app"), "applied", d1)
	stateFile := filepath.Join(cfg.StateDir, store.StateFile)

	// The first unchanged poll may record that the source is steady; from
	// then on, unchanged polls do not touch the disk.
	one(t, poll(a, "app"), "unchanged", d1)
	fi0, err := os.Stat(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	b0, _ := os.ReadFile(stateFile)
	for i := range 3 {
		n := e.requestCount()
		one(t, poll(a, "app"), "unchanged", d1)
		if reqs := e.requestsSince(n); len(reqs) != 1 || !strings.HasPrefix(reqs[0], "HEAD ") {
			t.Errorf("poll %d: an unchanged poll made %v, want one HEAD", i, reqs)
		}
	}
	if rec.count() != 1 {
		t.Errorf("Apply called %d times, want once", rec.count())
	}
	fi1, _ := os.Stat(stateFile)
	b1, _ := os.ReadFile(stateFile)
	if !os.SameFile(fi0, fi1) || !fi0.ModTime().Equal(fi1.ModTime()) || !bytes.Equal(b0, b1) {
		t.Errorf("unchanged polls rewrote state.json (mtime %v -> %v)", fi0.ModTime(), fi1.ModTime())
	}
	// In memory the poll is still recorded.
	if st := a.Status(); st.Sources[0].Last == nil || st.Sources[0].Last.Outcome != store.OutcomeUnchanged {
		t.Errorf("Status().Last = %+v", st.Sources[0].Last)
	}

	// Nor after a restart.
	a2 := newAgent(t, cfg, rec)
	one(t, poll(a2, "app"), "unchanged", d1)
	fi2, _ := os.Stat(stateFile)
	if !os.SameFile(fi0, fi2) {
		t.Error("an unchanged poll after a restart rewrote state.json")
	}
	if rec.count() != 1 {
		t.Errorf("Apply called %d times after the restart, want once in all", rec.count())
	}
}

func TestDowngradeByCreated(t *testing.T) {
	for _, allow := range []bool{false, true} {
		name := "refused"
		if allow {
			name = "allowDowngrade"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			global := ""
			if allow {
				global = "allowDowngrade: true"
			}
			cfg := e.config(global, src{name: "app", repo: "fleet/app"})
			rec := newRecorder()
			a := newAgent(t, cfg, rec)
			d1 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0})
			one(t, poll(a, "app"), "applied", d1)

			old := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0.Add(-time.Hour)})
			if allow {
				one(t, poll(a, "app"), "applied", old)
				if got := current(t, a, "app"); got != old {
					t.Errorf("current = %s, want %s", short(got), short(old))
				}
				return
			}
			r := one(t, poll(a, "app"), "refused", old)
			if !strings.Contains(r.Error, "downgrade refused") || !strings.Contains(r.Error, "allowDowngrade") {
				t.Errorf("error = %q", r.Error)
			}
			if rec.count() != 1 {
				t.Errorf("Apply called for a downgrade")
			}
			if got := current(t, a, "app"); got != d1 {
				t.Errorf("current = %s after a refused downgrade, want %s", short(got), short(d1))
			}
			if a.store.Has(old) {
				t.Error("the refused revision was pulled")
			}
			ss := sourceState(t, cfg, "app")
			if ss.Applied.Digest != d1 || ss.Last.Outcome != store.OutcomeRefused || ss.FailedDigest != old {
				t.Errorf("state = %+v", ss)
			}
		})
	}
}

// TestUnorderedRevision: a revision with no signed created time, on a tag
// (no versions to compare), cannot be ordered against the applied one: it
// may be older, so it is refused unless downgrades are allowed, it is an
// explicit rollback, or the configuration pins its digest.
func TestUnorderedRevision(t *testing.T) {
	for _, tc := range []struct {
		name, global, ref string
		want              string
	}{
		{name: "refused", want: "refused"},
		{name: "allowDowngrade", global: "allowDowngrade: true", want: "applied"},
		{name: "digest pinned", ref: "pinned", want: "applied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			d1 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0})
			s := src{name: "app", repo: "fleet/app"}
			cfg := e.config(tc.global, s)
			rec := newRecorder()
			a := newAgent(t, cfg, rec)
			one(t, poll(a, "app"), "applied", d1)

			unordered := e.push("fleet/app", "stable", artifact{files: withState(map[string]string{"x": "y"})}) // no created
			if tc.ref == "pinned" {
				s.ref = "{digest: " + unordered + "}"
				a = newAgent(t, e.config(tc.global, s), rec)
			}
			r := one(t, poll(a, "app"), tc.want, unordered)
			if tc.want == "applied" {
				return
			}
			for _, want := range []string{"cannot be ordered", unordered + " has no signed org.opencontainers.image.created", "allowDowngrade", "berth rollback"} {
				if !strings.Contains(r.Error, want) {
					t.Errorf("error %q lacks %q", r.Error, want)
				}
			}
			if got := current(t, a, "app"); got != d1 || rec.count() != 1 {
				t.Errorf("current = %s after %d applies, want %s kept", short(got), rec.count(), short(d1))
			}
			// An explicit rollback to it is the operator's choice.
			res, err := a.Rollback(context.Background(), "app", unordered)
			if err != nil || res.Outcome != string(store.OutcomeRolledBack) {
				t.Errorf("rollback to the unordered revision = %+v, %v", res, err)
			}
		})
	}
}

func TestSemverDowngrade(t *testing.T) {
	for _, allow := range []bool{false, true} {
		name := "refused"
		if allow {
			name = "allowDowngrade"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			global := ""
			if allow {
				global = "allowDowngrade: true"
			}
			cfg := e.config(global, src{name: "app", repo: "fleet/app", ref: `{semver: ">=1.0.0"}`})
			rec := newRecorder()
			a := newAgent(t, cfg, rec)
			// No created annotations: only the versions tell the order.
			v1 := e.push("fleet/app", "1.0.0", artifact{files: withState(nil)})
			v2 := e.push("fleet/app", "2.0.0", artifact{files: withState(nil)})
			one(t, poll(a, "app"), "applied", v2)
			if ss := sourceState(t, cfg, "app"); ss.Applied.Version != "2.0.0" || ss.Applied.Tag != "2.0.0" {
				t.Fatalf("applied = %+v", ss.Applied)
			}
			// 2.0.0 disappears: the range now selects 1.0.0.
			e.deleteTag("fleet/app", "2.0.0")
			if allow {
				one(t, poll(a, "app"), "applied", v1)
				return
			}
			r := one(t, poll(a, "app"), "refused", v1)
			if !strings.Contains(r.Error, "downgrade refused") || !strings.Contains(r.Error, "1.0.0") || !strings.Contains(r.Error, "2.0.0") {
				t.Errorf("error = %q", r.Error)
			}
			if rec.count() != 1 || current(t, a, "app") != v2 {
				t.Errorf("a semver downgrade was applied")
			}
		})
	}
}

func TestUnsignedRefused(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("", src{name: "app", repo: "fleet/app"})
	rec := newRecorder()
	a := newAgent(t, cfg, rec)
	ctx := context.Background()
	d1 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0})
	one(t, poll(a, "app"), "applied", d1)
	d2 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0.Add(time.Hour), unsigned: true})
	r := one(t, poll(a, "app"), "refused", d2)
	if !strings.Contains(r.Error, "verify") {
		t.Errorf("error = %q", r.Error)
	}
	if rec.count() != 1 || current(t, a, "app") != d1 || a.store.Has(d2) {
		t.Error("an unsigned artifact was pulled or applied")
	}

	// insecureSkipVerify applies it.
	cfg2 := e.config("", src{name: "app", repo: "fleet/app", extra: "    insecureSkipVerify: true"})
	a2 := newAgent(t, cfg2, rec)
	one(t, poll(a2, "app"), "backoff", d2) // refused just before
	res, _ := a2.ReconcileNow(ctx, "app", api.ReconcileOptions{})
	one(t, res, "applied", d2)
}

func TestRegistryErrorLeavesApplied(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("", src{name: "app", repo: "fleet/app"})
	rec := newRecorder()
	a := newAgent(t, cfg, rec)
	d1 := e.push("fleet/app", "stable", artifact{files: withState(nil)})
	one(t, poll(a, "app"), "applied", d1)
	e.deleteTag("fleet/app", "stable")
	r := one(t, poll(a, "app"), "error", "")
	if r.Error == "" {
		t.Error("no error for a missing tag")
	}
	ss := sourceState(t, cfg, "app")
	if current(t, a, "app") != d1 || ss.Applied.Digest != d1 || ss.Failures != 1 || ss.Last.Outcome != store.OutcomeError {
		t.Errorf("after a registry error: current %s, state %+v", short(current(t, a, "app")), ss)
	}
}

func TestRollback(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("", src{name: "app", repo: "fleet/app"})
	rec := newRecorder()
	a := newAgent(t, cfg, rec)
	ctx := context.Background()

	// Nothing applied yet: nothing to roll back to.
	if _, err := a.Rollback(ctx, "app", ""); !errors.Is(err, api.ErrConflict) || !errors.Is(err, ErrNoRollback) {
		t.Fatalf("Rollback before any apply = %v, want ErrConflict", err)
	}
	d1 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0})
	one(t, poll(a, "app"), "applied", d1)
	_, err := a.Rollback(ctx, "app", "")
	if !errors.Is(err, api.ErrConflict) {
		t.Fatalf("Rollback with one revision = %v, want ErrConflict", err)
	}
	if !strings.Contains(err.Error(), "app") {
		t.Errorf("error %q does not name the source", err)
	}
	if _, err := a.Rollback(ctx, "nope", ""); !errors.Is(err, api.ErrUnknownSource) {
		t.Errorf("Rollback of an unknown source = %v", err)
	}

	d2 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0.Add(time.Hour)})
	one(t, poll(a, "app"), "applied", d2)
	// A failed revision in the history is not a rollback target.
	d3 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0.Add(2 * time.Hour)})
	rec.setFail(d3, errors.New("broken"))
	one(t, poll(a, "app"), "failed", d3)
	calls := rec.count()

	res, err := a.Rollback(ctx, "app", "")
	if err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	if res.Outcome != string(store.OutcomeRolledBack) || res.Digest != d1 || res.Error != "" {
		t.Fatalf("Rollback = %+v, want rolled-back to %s (older, so a downgrade)", res, short(d1))
	}
	c := rec.last(t)
	if rec.count() != calls+1 || c.rev.Digest != d1 || c.prev == nil || c.prev.Digest != d2 {
		t.Errorf("Apply calls %d, rev %s prev %+v; want d1 over d2", rec.count()-calls, short(c.rev.Digest), c.prev)
	}
	if got := current(t, a, "app"); got != d1 {
		t.Errorf("current = %s, want %s", short(got), short(d1))
	}
	ss := sourceState(t, cfg, "app")
	if !ss.Suspended || ss.Applied.Digest != d1 || ss.Applied.Outcome != store.OutcomeRolledBack {
		t.Errorf("after rollback: suspended %v applied %+v", ss.Suspended, ss.Applied)
	}

	// Suspended: polls do not move it forward again.
	calls = rec.count()
	if r := poll(a, "app"); r[0].Outcome != "suspended" {
		t.Errorf("poll after a rollback = %+v, want suspended", r)
	}
	if r := a.RunOnce(ctx); r[0].Outcome != "suspended" || !strings.Contains(r[0].Error, "resume") {
		t.Errorf("RunOnce after a rollback = %+v, want suspended", r)
	}
	res2, err := a.ReconcileNow(ctx, "app", api.ReconcileOptions{})
	if err != nil || res2[0].Outcome != "suspended" {
		t.Errorf("ReconcileNow after a rollback = %+v, %v", res2, err)
	}
	if rec.count() != calls || current(t, a, "app") != d1 {
		t.Error("a suspended source was reconciled")
	}

	// An explicit digest, and rolling back again from a rolled-back state.
	res, err = a.Rollback(ctx, "app", d2)
	if err != nil || res.Outcome != "rolled-back" || res.Digest != d2 {
		t.Fatalf("Rollback --to d2 = %+v, %v", res, err)
	}
	res, err = a.Rollback(ctx, "app", "")
	if err != nil || res.Digest != d1 {
		t.Errorf("second Rollback = %+v, %v; want back to d1", res, err)
	}

	// Resume: the tracked tag wins again (the failed d3 is still backing off,
	// so a new push is needed).
	if err := a.Suspend("app", false); err != nil {
		t.Fatal(err)
	}
	d4 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0.Add(3 * time.Hour)})
	one(t, poll(a, "app"), "applied", d4)
}

func TestRollbackRepullsCollectedRevision(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("keepRevisions: 1", src{name: "app", repo: "fleet/app"})
	rec := newRecorder()
	a := newAgent(t, cfg, rec)
	ctx := context.Background()
	d1 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0})
	one(t, poll(a, "app"), "applied", d1)
	d2 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0.Add(time.Hour)})
	one(t, poll(a, "app"), "applied", d2)
	if a.store.Has(d1) {
		t.Fatal("keepRevisions: 1 kept the older revision")
	}
	res, err := a.Rollback(ctx, "app", "")
	if err != nil || res.Outcome != "rolled-back" || res.Digest != d1 {
		t.Fatalf("Rollback = %+v, %v", res, err)
	}
	if !a.store.Has(d1) || current(t, a, "app") != d1 {
		t.Error("the rolled-back revision was not pulled again")
	}
	if c := rec.last(t); c.serial == "" || c.prev == nil || c.prev.Digest != d2 {
		t.Errorf("Apply got %+v", c)
	}
}

func TestExtensions(t *testing.T) {
	withExt := withState(map[string]string{"berth.yaml": berthYAML + "extensions:\n  usbguard: {compose: {path: extensions/usbguard}}\n"})
	withOther := withState(map[string]string{"berth.yaml": berthYAML + "extensions:\n  other: {compose: {path: extensions/other}}\n"})
	for _, tc := range []struct {
		name    string
		files   map[string]string
		outcome string
	}{
		{"defined", withExt, "applied"},
		{"not defined", withState(nil), "refused"},
		{"another extension", withOther, "refused"},
		{"no berth.yaml", map[string]string{"README": "x"}, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			cfg := e.config("extensions: [usbguard]", src{name: "app", repo: "fleet/app"})
			rec := newRecorder()
			a := newAgent(t, cfg, rec)
			d := e.push("fleet/app", "stable", artifact{files: tc.files})
			r := one(t, poll(a, "app"), tc.outcome, d)
			if tc.outcome == "applied" {
				if c := rec.last(t); !slices.Equal(c.rev.Extensions, []string{"usbguard"}) || len(c.rev.State.Extensions) != 1 {
					t.Errorf("rev = %+v", c.rev)
				}
				return
			}
			if !strings.Contains(r.Error, `"usbguard"`) {
				t.Errorf("error %q does not name the extension", r.Error)
			}
			if rec.count() != 0 {
				t.Error("Apply called for a revision without the enabled extension")
			}
			if got := current(t, a, "app"); got != "" {
				t.Errorf("current = %s after a refusal", short(got))
			}
		})
	}
}

func TestBadStateRefused(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("", src{name: "app", repo: "fleet/app"})
	rec := newRecorder()
	a := newAgent(t, cfg, rec)
	d := e.push("fleet/app", "stable", artifact{files: map[string]string{"berth.yaml": "apiVersion: berth.dev/v1\nkind: DeviceState\nbogus: 1\n"}})
	r := one(t, poll(a, "app"), "refused", d)
	if !strings.Contains(r.Error, "berth.yaml") || rec.count() != 0 {
		t.Errorf("result %+v, %d calls", r, rec.count())
	}
}

func TestGCKeepsKeepRevisions(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("keepRevisions: 2", src{name: "app", repo: "fleet/app"})
	rec := newRecorder()
	a := newAgent(t, cfg, rec)
	var ds []string
	for i := range 4 {
		d := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0.Add(time.Duration(i) * time.Hour)})
		one(t, poll(a, "app"), "applied", d)
		ds = append(ds, d)
		entries, err := os.ReadDir(filepath.Join(cfg.StateDir, "revisions"))
		if err != nil {
			t.Fatal(err)
		}
		dirs := 0
		for _, e := range entries {
			if e.IsDir() {
				dirs++
			}
		}
		if want := min(i+1, 2); dirs != want {
			t.Errorf("after apply %d: %d revisions on disk, want %d", i, dirs, want)
		}
	}
	for i, d := range ds {
		if want := i >= 2; a.store.Has(d) != want {
			t.Errorf("revision %d present = %v, want %v", i, !want, want)
		}
	}
	// A failed apply keeps the applied revisions and the failed one is
	// collected at the next apply.
	bad := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0.Add(10 * time.Hour)})
	rec.setFail(bad, errors.New("no"))
	one(t, poll(a, "app"), "failed", bad)
	if !a.store.Has(ds[2]) || !a.store.Has(ds[3]) {
		t.Error("a failed apply collected kept revisions")
	}
	good := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0.Add(11 * time.Hour)})
	one(t, poll(a, "app"), "applied", good)
	for d, want := range map[string]bool{bad: false, ds[2]: false, ds[3]: true, good: true} {
		if a.store.Has(d) != want {
			t.Errorf("%s present = %v, want %v", short(d), !want, want)
		}
	}
}

func TestDigestRef(t *testing.T) {
	e := newEnv(t)
	d1 := e.push("fleet/app", "stable", artifact{files: withState(nil)})
	cfg := e.config("", src{name: "app", repo: "fleet/app", ref: `{digest: "` + d1 + `"}`})
	rec := newRecorder()
	a := newAgent(t, cfg, rec)
	one(t, poll(a, "app"), "applied", d1)
	// A digest source costs no registry request once applied.
	n := e.requestCount()
	one(t, poll(a, "app"), "unchanged", d1)
	if reqs := e.requestsSince(n); len(reqs) != 0 {
		t.Errorf("an unchanged digest poll made requests: %v", reqs)
	}
}

// TestRunOnceIsExplicit: --once, like reconcile --now, retries a digest that
// is backing off, and reports suspended sources without reconciling them.
func TestRunOnceIsExplicit(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("", src{name: "app", repo: "fleet/app"}, src{name: "off", repo: "fleet/off", extra: "    suspend: true"})
	rec := newRecorder()
	rec.setFailAll(errors.New("down"))
	a := newAgent(t, cfg, rec)
	d := e.push("fleet/app", "stable", artifact{files: withState(nil)})
	e.push("fleet/off", "stable", artifact{files: withState(nil)})
	one(t, poll(a, "app"), "failed", d)
	one(t, poll(a, "app"), "backoff", d)
	res := a.RunOnce(context.Background())
	if len(res) != 2 || res[0].Source != "app" || res[0].Outcome != "failed" || res[1].Source != "off" || res[1].Outcome != "suspended" {
		t.Fatalf("RunOnce = %+v", res)
	}
	if rec.count() != 2 {
		t.Errorf("Apply called %d times, want 2 (the poll and --once)", rec.count())
	}
	rec.setFailAll(nil)
	res = a.RunOnce(context.Background())
	if res[0].Outcome != "applied" || res[1].Outcome != "suspended" {
		t.Errorf("RunOnce = %+v", res)
	}
	if got := current(t, a, "off"); got != "" {
		t.Errorf("the suspended source was switched to %s", short(got))
	}
}

// wantLastOutcome checks that berth_source_last_outcome of source holds one
// series, for digest with outcome.
func wantLastOutcome(t *testing.T, a *Agent, source, digest, outcome string) {
	t.Helper()
	mfs, err := a.metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		if mf.GetName() != "berth_source_last_outcome" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["source"] == source {
				got = append(got, l["digest"]+" "+l["outcome"])
			}
		}
	}
	if want := digest + " " + outcome; len(got) != 1 || got[0] != want {
		t.Fatalf("berth_source_last_outcome{source=%q} = %v, want [%s]", source, got, want)
	}
}
