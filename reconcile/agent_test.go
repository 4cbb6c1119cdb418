package reconcile

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/store"
)

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		n    int
		max  time.Duration
		want time.Duration
	}{
		{0, time.Minute, 2 * time.Second},
		{1, time.Minute, 2 * time.Second},
		{2, time.Minute, 4 * time.Second},
		{3, time.Minute, 8 * time.Second},
		{5, time.Minute, 32 * time.Second},
		{6, time.Minute, time.Minute}, // 64s capped
		{7, time.Minute, time.Minute},
		{1000, time.Minute, time.Minute},
		{1 << 40, 5 * time.Minute, 5 * time.Minute}, // no overflow
		{1, time.Second, time.Second},               // the shortest interval caps even the first wait
		{4, 5 * time.Second, 5 * time.Second},
		{3, 8 * time.Second, 8 * time.Second},
		{10, 24 * time.Hour, 1024 * time.Second},
	} {
		if got := backoff(tc.n, tc.max); got != tc.want {
			t.Errorf("backoff(%d, %v) = %v, want %v", tc.n, tc.max, got, tc.want)
		}
	}
	// Monotonic in n and never above max.
	for _, max := range []time.Duration{time.Second, 7 * time.Second, time.Minute, time.Hour} {
		prev := time.Duration(0)
		for n := 1; n < 64; n++ {
			d := backoff(n, max)
			if d < prev || d > max || d <= 0 {
				t.Fatalf("backoff(%d, %v) = %v after %v", n, max, d, prev)
			}
			prev = d
		}
	}
}

func TestJitter(t *testing.T) {
	if got := jitter(time.Minute, 0); got != time.Minute {
		t.Errorf("jitter(1m, 0) = %v", got)
	}
	for range 1000 {
		got := jitter(time.Minute, 0.1)
		if got < 54*time.Second || got > 66*time.Second {
			t.Fatalf("jitter(1m, 0.1) = %v, outside ±10%%", got)
		}
	}
}

func TestDowngrade(t *testing.T) {
	t1 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	applied := &store.Revision{Digest: "sha256:applied", Version: "1.2.0", Created: t1}
	for _, tc := range []struct {
		name    string
		applied *store.Revision
		rev     store.Revision
		refused string // substring of the error; "" means allowed
		pinned  bool   // the configuration pins the digest
	}{
		{"newer version and time", applied, store.Revision{Version: "1.3.0", Created: t1.Add(time.Hour)}, "", false},
		{"same version, same time", applied, store.Revision{Version: "1.2.0", Created: t1}, "", false},
		{"same version, later", applied, store.Revision{Version: "1.2.0", Created: t1.Add(time.Second)}, "", false},
		{"lower version", applied, store.Revision{Version: "1.1.9", Created: t1.Add(time.Hour)}, "1.1.9", false},
		{"lower major", applied, store.Revision{Version: "0.9.0"}, "older than the applied 1.2.0", false},
		{"pre-release of the applied", applied, store.Revision{Version: "1.2.0-rc.1", Created: t1.Add(time.Hour)}, "1.2.0-rc.1", false},
		{"v prefix compares", applied, store.Revision{Version: "v1.1.0"}, "v1.1.0", false},
		{"build metadata ignored", applied, store.Revision{Version: "1.2.0+build.7", Created: t1}, "", false},
		{"higher version, older time", applied, store.Revision{Version: "1.3.0", Created: t1.Add(-time.Hour)}, "was created", false},
		{"older time, no versions", &store.Revision{Digest: "sha256:applied", Created: t1}, store.Revision{Created: t1.Add(-time.Second)}, "was created", false},
		{"newer time, no versions", &store.Revision{Digest: "sha256:applied", Created: t1}, store.Revision{Created: t1.Add(time.Second)}, "", false},
		{"no time on the new revision", applied, store.Revision{Version: "1.3.0"}, "", false},
		{"no time on the applied revision", &store.Revision{Version: "1.2.0"}, store.Revision{Version: "1.2.1", Created: t1.Add(-time.Hour)}, "", false},
		{"applied from a rollback has no version", &store.Revision{Created: t1}, store.Revision{Version: "0.1.0", Created: t1.Add(time.Hour)}, "", false},
		{"new revision has no version", applied, store.Revision{Created: t1.Add(time.Hour)}, "", false},
		{"unparsable version", applied, store.Revision{Version: "main", Created: t1.Add(time.Hour)}, "", false},
		{"nothing known: may be older", &store.Revision{}, store.Revision{}, "cannot be ordered", false},
		{"nothing known, digest pinned", &store.Revision{}, store.Revision{}, "", true},
		{"no time on the new revision, no versions", &store.Revision{Digest: "sha256:applied", Created: t1}, store.Revision{}, "sha256:new has no signed", false},
		{"no time on the applied revision, no versions", &store.Revision{Digest: "sha256:applied"}, store.Revision{Created: t1}, "the applied sha256:applied has no signed", false},
		{"unparsable version, no time", applied, store.Revision{Version: "main"}, "cannot be ordered", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.rev.Digest = "sha256:new"
			err := downgrade(tc.applied, tc.rev, tc.pinned)
			if tc.refused == "" {
				if err != nil {
					t.Fatalf("downgrade = %v, want allowed", err)
				}
				return
			}
			if err == nil {
				t.Fatal("downgrade allowed, want refused")
			}
			var se *stepError
			if !errors.As(err, &se) || se.outcome != store.OutcomeRefused {
				t.Errorf("error %v is not a refusal", err)
			}
			for _, want := range []string{"downgrade refused", tc.refused, "rollback", "allowDowngrade"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}
}

func TestSuspendPersists(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("", src{name: "app", repo: "fleet/app"}, src{name: "other", repo: "fleet/other"})
	rec := newRecorder()
	a := newAgent(t, cfg, rec)
	ctx := context.Background()
	e.push("fleet/app", "stable", artifact{files: withState(nil)})

	if err := a.Suspend("nope", true); !errors.Is(err, api.ErrUnknownSource) {
		t.Errorf("Suspend(nope) = %v, want ErrUnknownSource", err)
	}
	if err := a.Suspend("app", true); err != nil {
		t.Fatal(err)
	}
	if !sourceState(t, cfg, "app").Suspended {
		t.Fatal("Suspend did not write state.json")
	}

	// A new agent on the same state folder keeps the source suspended.
	a2 := newAgent(t, cfg, rec)
	st := a2.Status()
	if !st.Sources[0].Suspended || st.Sources[1].Suspended {
		t.Fatalf("after New: suspended = %v, %v; want true, false", st.Sources[0].Suspended, st.Sources[1].Suspended)
	}
	res, err := a2.ReconcileNow(ctx, "app", api.ReconcileOptions{})
	if err != nil || len(res) != 1 || res[0].Outcome != "suspended" || !strings.Contains(res[0].Error, "berth resume app") {
		t.Errorf("ReconcileNow of a suspended source = %+v, %v", res, err)
	}
	if rec.count() != 0 {
		t.Error("a suspended source was applied")
	}
	// Ready does not wait for a suspended source.
	if err := a2.Ready(); err == nil || strings.Contains(err.Error(), "app ") || !strings.Contains(err.Error(), "other") {
		t.Errorf("Ready = %v, want waiting for other only", err)
	}

	// Resume persists too, and wakes the source's loop.
	if err := a2.Suspend("app", false); err != nil {
		t.Fatal(err)
	}
	if len(a2.sources["app"].trigger) != 1 {
		t.Error("resume did not trigger a reconcile")
	}
	if sourceState(t, cfg, "app").Suspended {
		t.Error("resume not written to state.json")
	}
	a3 := newAgent(t, cfg, rec)
	if a3.suspended("app") {
		t.Error("resumed source suspended again after New")
	}
	one(t, poll(a3, "app"), "applied", "")

	// suspend: true in the configuration suspends at start.
	cfg2 := e.config("", src{name: "app", repo: "fleet/app", extra: "    suspend: true"}, src{name: "other", repo: "fleet/other"})
	a4 := newAgent(t, cfg2, rec)
	if !a4.suspended("app") {
		t.Error("suspend: true in the configuration is not honoured")
	}
}

func TestUnknownSource(t *testing.T) {
	e := newEnv(t)
	a := newAgent(t, e.config("", src{name: "app", repo: "fleet/app"}))
	ctx := context.Background()
	if _, err := a.ReconcileNow(ctx, "nope", api.ReconcileOptions{}); !errors.Is(err, api.ErrUnknownSource) || !strings.Contains(err.Error(), "app") {
		t.Errorf("ReconcileNow(nope) = %v, want ErrUnknownSource listing the configured ones", err)
	}
	if _, err := a.Rollback(ctx, "nope", ""); !errors.Is(err, api.ErrUnknownSource) {
		t.Errorf("Rollback(nope) = %v", err)
	}
}

func TestNotifyRepository(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("",
		src{name: "a", repo: "fleet/one"},
		src{name: "b", repo: "fleet/two"},
		src{name: "c", repo: "fleet/one", ref: "{tag: canary}"},
		src{name: "d", repo: "fleet/one", extra: "    suspend: true"},
	)
	a := newAgent(t, cfg)
	ctx := context.Background()
	pending := func() []string {
		var out []string
		for _, n := range a.order {
			if len(a.sources[n].trigger) > 0 {
				out = append(out, n)
			}
		}
		return out
	}
	drain := func() {
		for _, s := range a.sources {
			select {
			case <-s.trigger:
			default:
			}
		}
	}
	for _, tc := range []struct {
		name, host, repo string
		want             []string
	}{
		{"two sources of one repository", e.host, "fleet/one", []string{"a", "c"}},
		{"one source", e.host, "fleet/two", []string{"b"}},
		{"other repository", e.host, "fleet/three", nil},
		{"repository prefix", e.host, "fleet", nil},
		{"other host", "registry.example.com", "fleet/one", nil},
		{"host without port", "127.0.0.1", "fleet/one", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			drain()
			got := a.NotifyRepository(ctx, tc.host, tc.repo, "stable", "sha256:x")
			if !slices.Equal(got, tc.want) {
				t.Errorf("NotifyRepository = %v, want %v", got, tc.want)
			}
			if p := pending(); !slices.Equal(p, tc.want) {
				t.Errorf("triggered %v, want %v", p, tc.want)
			}
		})
	}
	// Notifications do not pile up or block.
	drain()
	for range 5 {
		a.NotifyRepository(ctx, e.host, "fleet/two", "", "")
	}
	if n := len(a.sources["b"].trigger); n != 1 {
		t.Errorf("%d pending triggers, want 1", n)
	}
}

func TestReady(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("", src{name: "app", repo: "fleet/app"}, src{name: "missing", repo: "fleet/missing"})
	a := newAgent(t, cfg, newRecorder())
	e.push("fleet/app", "stable", artifact{files: withState(nil)})
	err := a.Ready()
	if err == nil || !strings.Contains(err.Error(), "app") || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Ready before any reconcile = %v, want both sources waiting", err)
	}
	one(t, poll(a, "app"), "applied", "")
	if err := a.Ready(); err == nil || !strings.Contains(err.Error(), "missing") || strings.Contains(err.Error(), "app ") {
		t.Errorf("Ready after one source = %v", err)
	}
	// A failed attempt counts: readiness is about having tried.
	res := a.RunOnce(context.Background())
	if len(res) != 2 || res[1].Outcome != "error" {
		t.Fatalf("RunOnce = %+v", res)
	}
	if err := a.Ready(); err != nil {
		t.Errorf("Ready after RunOnce = %v", err)
	}
}

// runAgent runs a.Run in the background; stop cancels it and fails the test
// unless Run returns within a few seconds.
func runAgent(t *testing.T, a *Agent) (ready <-chan struct{}, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	readyc := make(chan struct{})
	var readyCalls atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- a.Run(ctx, func() {
			if readyCalls.Add(1) == 1 {
				close(readyc)
			}
		})
	}()
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after its context was cancelled")
		}
		if n := readyCalls.Load(); n > 1 {
			t.Errorf("ready called %d times", n)
		}
	}
	t.Cleanup(stop)
	return readyc, stop
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunReconcilesAtInterval(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("", src{name: "app", repo: "fleet/app", extra: "    interval: 1s"})
	rec := newRecorder()
	a := newAgent(t, cfg, rec)
	d1 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0})
	heads := e.heads.Load()

	ready, stop := runAgent(t, a)
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatal("ready was never called")
	}
	if err := a.Ready(); err != nil {
		t.Errorf("Ready after the ready callback = %v", err)
	}
	if rec.count() != 1 || rec.last(t).rev.Digest != d1 {
		t.Fatalf("first reconcile: %d calls", rec.count())
	}
	// Unchanged polls keep coming at the interval.
	waitFor(t, 10*time.Second, "three polls", func() bool { return e.heads.Load()-heads >= 3 })
	if st := a.Status(); st.Sources[0].NextReconcile.IsZero() || st.Sources[0].Interval != "1s" {
		t.Errorf("status = %+v", st.Sources[0])
	}
	// A new revision is picked up by a following poll.
	d2 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0.Add(time.Hour)})
	waitFor(t, 10*time.Second, "the new revision", func() bool { return rec.count() == 2 })
	if c := rec.last(t); c.rev.Digest != d2 || c.prev == nil || c.prev.Digest != d1 {
		t.Errorf("second apply: rev %s prev %+v", short(c.rev.Digest), c.prev)
	}
	stop()
	// Nothing runs after Run returned.
	n := e.requests.Load()
	time.Sleep(1500 * time.Millisecond)
	if m := e.requests.Load(); m != n {
		t.Errorf("%d registry requests after Run returned", m-n)
	}
}

func TestRunTriggers(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("",
		src{name: "app", repo: "fleet/app", extra: "    interval: 1h"},
		src{name: "off", repo: "fleet/off", extra: "    interval: 1h\n    suspend: true"},
	)
	rec := newRecorder()
	a := newAgent(t, cfg, rec)
	e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0})
	e.push("fleet/off", "stable", artifact{files: withState(nil), created: t0})
	ready, stop := runAgent(t, a)
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatal("ready was never called (a suspended source must not hold it back)")
	}
	if rec.count() != 1 {
		t.Fatalf("%d applies, want 1 (the suspended source is skipped)", rec.count())
	}
	// A registry notification reconciles at once, long before the interval.
	d2 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0.Add(time.Hour)})
	if got := a.NotifyRepository(context.Background(), e.host, "fleet/app", "stable", d2); !slices.Equal(got, []string{"app"}) {
		t.Fatalf("NotifyRepository = %v", got)
	}
	waitFor(t, 10*time.Second, "the notified reconcile", func() bool { return rec.count() == 2 })
	if rec.last(t).rev.Digest != d2 {
		t.Error("the notification applied another digest")
	}
	// Resuming wakes the suspended source's loop.
	if err := a.Suspend("off", false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the resumed source", func() bool { return rec.count() == 3 })
	if rec.last(t).rev.Source != "off" {
		t.Errorf("third apply is of %s", rec.last(t).rev.Source)
	}
	stop()
}

func TestRunStopsWhenCancelledEarly(t *testing.T) {
	e := newEnv(t)
	a := newAgent(t, e.config("", src{name: "app", repo: "fleet/app"}), newRecorder())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var called atomic.Bool
	done := make(chan struct{})
	go func() {
		_ = a.Run(ctx, func() { called.Store(true) })
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run with a cancelled context did not return")
	}
	time.Sleep(50 * time.Millisecond)
	if called.Load() {
		t.Error("ready called although the context was cancelled")
	}
}
