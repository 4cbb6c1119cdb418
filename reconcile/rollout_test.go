package reconcile

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/policy/rollout"
	"github.com/berth-dev/berth/reconcile/config"
	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/state"
)

// created is the created time of the releases with a plan in these tests.
var created = time.Date(2026, 12, 8, 8, 0, 0, 0, time.UTC)

// TestRolloutWaves: three devices (a canary, one whose bucket is in the
// first 10 %, one in the last wave) see a release with a plan. Each
// prefetches it at once and adopts it exactly when its wave opens on the
// agent's clock, never a second before; a device whose clock is before
// the release's created time waits and says so; the poll after the wait
// is scheduled at the wave's opening; a poll while waiting fetches nothing
// of the release again; and once the rollout is over, an unchanged poll is
// one request again.
func TestRolloutWaves(t *testing.T) {
	e := newEnv(t)
	clk := newClock(created.Add(-3 * time.Hour))
	const interval = 10 * time.Minute
	canary, ed, ld := e.wavesFleet(clk, interval)
	devs := []*device{canary, ed, ld}

	d0 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: created.Add(-4 * time.Hour)})
	for _, d := range devs {
		d.expect(t, "applied", d0, d0) // no plan: adopted at once, as before
	}
	d1 := e.push("fleet/app", "stable", artifact{files: withPlan(), created: created})

	// A clock before the release's created time: wait, say so, and do not
	// jump ahead, canary included.
	clk.Set(created.Add(-time.Minute))
	for _, d := range devs {
		res := d.expect(t, "waiting", d1, d0)
		if !strings.Contains(res.Message, "before the release's created time") || res.Waiting == nil || res.Waiting.Reason != store.WaitClock {
			t.Errorf("%s: %+v %+v", d.name, res, res.Waiting)
		}
	}

	clk.Set(created.Add(time.Minute))
	canary.expect(t, "applied", d1, d1)
	for _, tc := range []struct {
		d     *device
		wave  string
		opens time.Time
	}{{ed, "early", created.Add(2 * time.Hour)}, {ld, "all", created.Add(24 * time.Hour)}} {
		res := tc.d.expect(t, "waiting", d1, d0)
		want := fmt.Sprintf("waiting for wave %s (opens %s)", tc.wave, tc.opens.Format(time.RFC3339))
		if res.Message != want || res.Waiting == nil || res.Waiting.Reason != store.WaitWave || !res.Waiting.Until.Equal(tc.opens) {
			t.Errorf("%s: %+v %+v, want %q", tc.d.name, res, res.Waiting, want)
		}
		if !tc.d.a.store.Has(d1) {
			t.Errorf("%s: the release waiting was not prefetched", tc.d.name)
		}
		if n := tc.d.rec.count(); n != 1 {
			t.Errorf("%s: %d applies while waiting, want only d0's", tc.d.name, n)
		}
		st := tc.d.a.Status().Sources[0]
		if st.Waiting == nil || st.Waiting.Message != want || len(st.Releases) != 1 || st.Releases[0].Wave != tc.wave ||
			st.Releases[0].Verdict != string(rollout.WaitWave) || !st.Releases[0].FirstSeen.Equal(created.Add(-time.Minute)) {
			t.Errorf("%s: status %+v %+v", tc.d.name, st.Waiting, st.Releases)
		}
	}

	// The next poll is due when the wave opens, if that is before the
	// interval (jitter is 0 here).
	clk.Set(created.Add(2*time.Hour - 30*time.Second))
	res := ed.expect(t, "waiting", d1, d0)
	if w := ed.a.nextWait("app", ed.a.sources["app"], res); w < 30*time.Second || w > 31*time.Second {
		t.Errorf("next poll in %v, want at the opening, 30s away", w)
	}
	// A poll while waiting does not fetch the release again: the tag and
	// the statements only.
	n := e.requestCount()
	ed.expect(t, "waiting", d1, d0)
	for _, r := range e.requestsSince(n) {
		if strings.Contains(r, "/blobs/") && !strings.Contains(r, "sha256-") && strings.HasPrefix(r, "GET") {
			continue // statements' bundles are blobs too: checked below by what is absent
		}
		if strings.HasSuffix(r, "/manifests/"+d1) && strings.HasPrefix(r, "GET") {
			t.Errorf("a poll while waiting fetched the manifest again: %s", r)
		}
	}

	clk.Set(created.Add(2*time.Hour - time.Second))
	ed.expect(t, "waiting", d1, d0)
	clk.Set(created.Add(2 * time.Hour))
	ed.expect(t, "applied", d1, d1)
	clk.Set(created.Add(24*time.Hour - time.Second))
	ld.expect(t, "waiting", d1, d0)
	clk.Set(created.Add(24 * time.Hour))
	ld.expect(t, "applied", d1, d1)
	if ss := sourceState(t, ld.cfg, "app"); ss.Waiting != nil || ss.Release(d1) == nil || ss.Release(d1).Previous != d0 {
		t.Errorf("state.json after adoption: waiting %+v, release %+v", ss.Waiting, ss.Release(d1))
	}

	// Statements are looked up until the last wave has been open for one
	// interval; after that an unchanged poll is one request.
	clk.Set(created.Add(24*time.Hour + interval - time.Second))
	n = e.requestCount()
	ld.expect(t, "unchanged", d1, d1)
	if got := e.requestsSince(n); len(got) < 2 {
		t.Errorf("a poll during the rollout made %d requests (%v): statements not looked up", len(got), got)
	}
	clk.Set(created.Add(24*time.Hour + interval))
	for _, d := range devs {
		n = e.requestCount()
		d.expect(t, "unchanged", d1, d1)
		if got := e.requestsSince(n); len(got) != 1 {
			t.Errorf("%s: an unchanged poll after the rollout made %d requests: %v", d.name, len(got), got)
		}
	}
}

// TestRolloutStatements steers a rollout with signed statements: unsigned,
// untrusted and copied statements change nothing and are reported; a pause
// stops adoption and a resume continues it; an abort takes the devices on
// the release back to the revision they ran before (a downgrade the abort
// authorizes), keeps the others where they are, survives the end of the
// look-ups and a restart, and the next release proceeds normally.
func TestRolloutStatements(t *testing.T) {
	e := newEnv(t)
	_, sv := signingKey(t)
	clk := newClock(created.Add(-3 * time.Hour))
	const interval = 10 * time.Minute
	canary, ed, ld := e.wavesFleet(clk, interval)

	d0 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: created.Add(-4 * time.Hour)})
	for _, d := range []*device{canary, ed, ld} {
		d.expect(t, "applied", d0, d0)
	}
	d1 := e.push("fleet/app", "stable", artifact{files: withPlan(), created: created})
	clk.Set(created.Add(time.Minute))
	canary.expect(t, "applied", d1, d1)
	ed.expect(t, "waiting", d1, d0)

	// An unsigned abort, one by an untrusted key and a trusted one copied
	// from another release change nothing, and are reported.
	other := e.push("fleet/app", "other", artifact{files: withPlan(), created: created})
	e.statement(sv, "fleet/app", other, rollout.Abort, created.Add(2*time.Minute), "another release")
	if n := e.copyStatements("fleet/app", other, d1); n != 1 {
		t.Fatalf("copied %d statements", n)
	}
	e.statement(stranger(t), "fleet/app", d1, rollout.Abort, created.Add(2*time.Minute), "not ours")
	e.forgedStatement("fleet/app", d1, rollout.Abort, created.Add(2*time.Minute))
	canary.expect(t, "unchanged", d1, d1)
	ed.expect(t, "waiting", d1, d0)
	for _, d := range []*device{canary, ed} {
		rel := sourceState(t, d.cfg, "app").Release(d1)
		if rel == nil || rel.Action != "" || rel.Ignored != 3 || rel.IgnoredReason == "" {
			t.Errorf("%s: release record %+v, want 3 statements ignored and no action", d.name, rel)
		}
	}

	// Pause: the early device does not adopt when its wave opens; the
	// canary stays.
	e.statement(sv, "fleet/app", d1, rollout.Pause, created.Add(3*time.Minute), "canary crash loop")
	clk.Set(created.Add(2 * time.Hour))
	res := ed.expect(t, "waiting", d1, d0)
	if res.Waiting.Reason != store.WaitPaused || !strings.Contains(res.Message, "paused by a signed statement") || !strings.Contains(res.Message, "canary crash loop") {
		t.Errorf("paused: %+v %+v", res, res.Waiting)
	}
	canary.expect(t, "unchanged", d1, d1)
	if st := ed.a.Status().Sources[0]; len(st.Releases) == 0 || st.Releases[0].Statement == nil || st.Releases[0].Statement.Action != "pause" ||
		st.Releases[0].Statement.Signer == "" || st.Releases[0].Ignored != 3 {
		t.Errorf("status of a paused release: %+v", st.Releases)
	}
	// Resume: adoption continues.
	e.statement(sv, "fleet/app", d1, rollout.Resume, created.Add(4*time.Minute), "")
	ed.expect(t, "applied", d1, d1)
	ld.expect(t, "waiting", d1, d0)

	// Abort: the devices on d1 go back to d0, a downgrade the anti-downgrade
	// check refuses, which the signed abort authorizes; the other device
	// never adopts d1.
	ss := sourceState(t, canary.cfg, "app")
	if len(ss.History) < 2 || ss.History[1].Digest != d0 || downgrade(ss.Applied, ss.History[1], false) == nil {
		t.Fatalf("going back from d1 to d0 is no downgrade: the test proves nothing")
	}
	e.statement(sv, "fleet/app", d1, rollout.Abort, created.Add(5*time.Minute), "bad release")
	for _, d := range []*device{canary, ed} {
		res := d.expect(t, "rolled-back", d0, d0)
		if !strings.Contains(res.Message, "aborted by a signed statement") {
			t.Errorf("%s: %+v", d.name, res)
		}
		if c := d.rec.last(t); c.rev.Digest != d0 || c.prev == nil || c.prev.Digest != d1 {
			t.Errorf("%s: revert applied %s from %+v", d.name, short(c.rev.Digest), c.prev)
		}
		d.expect(t, "aborted", d1, d0)
	}
	clk.Set(created.Add(24 * time.Hour))
	res = ld.expect(t, "aborted", d1, d0)
	if !strings.Contains(res.Message, "not adopted") || ld.rec.count() != 1 {
		t.Errorf("late device: %+v, %d applies", res, ld.rec.count())
	}

	// After the look-ups, and after a restart, the abort still holds: the
	// poll costs the tag alone.
	clk.Set(created.Add(24*time.Hour + interval))
	restarted := newAgentWith(t, canary.cfg, clk, canary.rec)
	n := e.requestCount()
	one(t, poll(restarted, "app"), "aborted", d1)
	if got := e.requestsSince(n); len(got) != 1 || current(t, restarted, "app") != d0 {
		t.Errorf("after the rollout and a restart: %d requests %v, current %s", len(got), got, short(current(t, restarted, "app")))
	}

	// The next release proceeds normally.
	d2 := e.push("fleet/app", "stable", artifact{files: withPlan(), created: created.Add(25 * time.Hour)})
	clk.Set(created.Add(25*time.Hour + time.Minute))
	one(t, poll(restarted, "app"), "applied", d2)
	ed.expect(t, "waiting", d2, d0)
}

// TestRolloutStatementsUnreadable: while the statements of a release in
// its rollout cannot be read, a device does not adopt it (one may be an
// abort) and a device on it stays on it; both say why.
func TestRolloutStatementsUnreadable(t *testing.T) {
	e := newEnv(t)
	clk := newClock(created.Add(time.Minute))
	canary := e.device("canary", "device: {id: c-1, labels: {ring: canary}}", clk, time.Minute, "")
	ed := e.device("early", "device: {id: "+idIn("fleet/app", "dev", 0, 1000)+"}", clk, time.Minute, "")
	d0 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: created.Add(-time.Hour)})
	canary.expect(t, "applied", d0, d0)
	ed.expect(t, "applied", d0, d0)
	d1 := e.push("fleet/app", "stable", artifact{files: withPlan(), created: created})
	canary.expect(t, "applied", d1, d1)
	ed.expect(t, "waiting", d1, d0)

	hexd1 := strings.TrimPrefix(d1, "sha256:")
	broken := func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/manifests/sha256-"+hexd1) || strings.Contains(r.URL.Path, "/referrers/") {
			http.Error(w, "storage backend unavailable", http.StatusInternalServerError)
			return true
		}
		return false
	}
	e.intercept.Store(&broken)
	clk.Set(created.Add(2 * time.Hour))
	for _, d := range []*device{canary, ed} {
		res := d.poll()
		if res.Outcome != "error" || !strings.Contains(res.Error, "rollout statements of") || !strings.Contains(res.Error, "not adopted") {
			t.Errorf("%s: %+v", d.name, res)
		}
	}
	if canary.current(t) != d1 || ed.current(t) != d0 {
		t.Errorf("current: canary %s, early %s", short(canary.current(t)), short(ed.current(t)))
	}
	e.intercept.Store(nil)
	ed.expect(t, "applied", d1, d1)
}

// TestDeviceIdentityRequired: without device.id and without a usable
// machine id the agent refuses to start; with one, status shows it.
func TestDeviceIdentityRequired(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("device: {idFile: "+e.dir+"/no-machine-id}", src{name: "app", repo: "fleet/app"})
	_, err := New(cfg, Options{Log: quietLog(t)})
	if !errors.Is(err, config.ErrNoDeviceID) || !strings.Contains(err.Error(), "refusing to start") || !strings.Contains(err.Error(), "device.id") {
		t.Errorf("New without a device id: %v", err)
	}
	cfg = e.config("device: {id: press-07, labels: {ring: canary, line: \"3\"}}", src{name: "app", repo: "fleet/app"})
	a := newAgent(t, cfg)
	if d := a.Status().Device; d == nil || d.ID != "press-07" || d.Labels["ring"] != "canary" || d.Labels["line"] != "3" {
		t.Errorf("status device = %+v", d)
	}
}

// TestLookupsDue checks the agent's look-up window, computed from what
// state.json records of a release, against rollout.Lookups.
func TestLookupsDue(t *testing.T) {
	st, err := state.Parse(state.FileName, []byte(berthYAML+planYAML))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		firstSeen, now time.Duration // after created
		interval       time.Duration
	}{
		{0, 0, time.Minute}, {0, 24 * time.Hour, time.Minute}, {0, 24*time.Hour + time.Minute, time.Minute},
		{0, 24*time.Hour + time.Minute - 1, time.Minute}, {30 * time.Hour, 30*time.Hour + 59*time.Second, time.Minute},
		{30 * time.Hour, 30*time.Hour + time.Minute, time.Minute}, {-time.Hour, -time.Hour, time.Hour},
	} {
		rec := store.Release{FirstSeen: created.Add(tc.firstSeen), Created: created, End: rollout.End(st.Rollout, created)}
		now := created.Add(tc.now)
		want := rollout.Lookups(st.Rollout, created, rec.FirstSeen, now, tc.interval)
		if got := lookupsDue(rec, now, tc.interval); got != want {
			t.Errorf("%+v: lookupsDue = %v, rollout.Lookups = %v", tc, got, want)
		}
	}
	if lookupsDue(store.Release{FirstSeen: created}, created, time.Hour) {
		t.Error("a release without plan is looked up")
	}
}
