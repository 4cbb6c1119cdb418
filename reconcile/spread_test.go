package reconcile

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/state"
)

// planAnnotation is planYAML as `berth push` copies it into the manifest.
func planAnnotation(t *testing.T) map[string]string {
	t.Helper()
	st, err := state.Parse(state.FileName, []byte(berthYAML+planYAML))
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{state.RolloutAnnotation: st.Rollout.Annotation()}
}

// fractionOf is a device's place in the spread of a release's downloads,
// from the documented formula (the first 53 bits of SHA-256(id "\n"
// digest) over 2^53), without the code under test.
func fractionOf(id, digest string) float64 {
	sum := sha256.Sum256([]byte(id + "\n" + digest))
	return float64(binary.BigEndian.Uint64(sum[:8])>>11) / (1 << 53)
}

// TestRolloutSpread: with the plan in the manifest, the canary verifies,
// downloads and adopts a release at once; a device of a later wave reads
// the manifest (two requests: the tag and the manifest) and verifies and
// downloads the release only at its own time in the spread (computed here
// from the formula); until then a poll is one request (the tag); the time
// survives a restart; from its time on the device prefetches and waits
// for its wave as without the spread, and adopts when the wave opens.
func TestRolloutSpread(t *testing.T) {
	e := newEnv(t)
	clk := newClock(created.Add(-3 * time.Hour))
	const interval = 10 * time.Minute
	canary, ed, ld := e.wavesFleet(clk, interval)
	d0 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: created.Add(-4 * time.Hour)})
	for _, d := range []*device{canary, ed, ld} {
		d.expect(t, "applied", d0, d0)
	}
	d1 := e.push("fleet/app", "stable", artifact{files: withPlan(), created: created, annotations: planAnnotation(t)})
	layers := e.layers("fleet/app", d1)

	seen := created.Add(time.Minute)
	clk.Set(seen)
	n := e.requestCount()
	canary.expect(t, "applied", d1, d1)
	manifests := 0
	for _, r := range e.requestsSince(n) {
		if r == "GET /v2/fleet/app/manifests/"+d1 {
			manifests++
		}
	}
	if manifests != 1 {
		t.Errorf("the canary read the manifest %d times, want once (the plan's copy and the signature check share it)", manifests)
	}
	for _, tc := range []struct {
		d     *device
		wave  string
		opens time.Time
		// The spread, after created: from one interval after first sight to
		// a quarter of the time before the opening, less the interval in
		// which the wave early adopts (jitter is 0 here).
		free [][2]time.Duration
	}{
		{ed, "early", created.Add(2 * time.Hour), [][2]time.Duration{{11 * time.Minute, 90*time.Minute + 15*time.Second}}},
		{ld, "all", created.Add(24 * time.Hour), [][2]time.Duration{{11 * time.Minute, 2 * time.Hour}, {2*time.Hour + 10*time.Minute, 18*time.Hour + 15*time.Second}}},
	} {
		var total time.Duration
		for _, f := range tc.free {
			total += f[1] - f[0]
		}
		pos := time.Duration(fractionOf(tc.d.id, d1) * float64(total))
		var at time.Time
		for _, f := range tc.free {
			if pos < f[1]-f[0] {
				at = created.Add(f[0] + pos)
				break
			}
			pos -= f[1] - f[0]
		}
		clk.Set(seen)
		n = e.requestCount()
		res := tc.d.expect(t, "waiting", d1, d0)
		if !strings.Contains(res.Message, "waiting for wave "+tc.wave) || !strings.Contains(res.Message, "verifying and downloading it from "+at.Format(time.RFC3339)) ||
			res.Waiting == nil || res.Waiting.Reason != store.WaitWave || !res.Waiting.Until.Equal(at) {
			t.Fatalf("%s: %+v %+v, want the download at %s", tc.d.name, res, res.Waiting, at)
		}
		if got := e.requestsSince(n); tc.d.a.store.Has(d1) || fetched(got, layers) || len(got) != 2 {
			t.Fatalf("%s: %d requests before its time in the spread (%v), want the tag and the manifest", tc.d.name, len(got), got)
		}
		st := tc.d.a.Status().Sources[0]
		if len(st.Releases) != 1 || st.Releases[0].Wave != tc.wave || !st.Releases[0].FirstSeen.Equal(seen) || !st.Releases[0].Opens.Equal(tc.opens) {
			t.Errorf("%s: status releases %+v", tc.d.name, st.Releases)
		}

		// Until its time, a poll costs the tag alone; after a restart the
		// tag and the manifest, and the time is kept.
		clk.Set(at.Add(-time.Second))
		n = e.requestCount()
		if res := tc.d.expect(t, "waiting", d1, d0); !res.Waiting.Until.Equal(at) {
			t.Errorf("%s: the download moved to %s", tc.d.name, res.Waiting.Until)
		}
		if got := e.requestsSince(n); len(got) != 1 {
			t.Errorf("%s: a poll before the device's time made %d requests, want the tag alone: %v", tc.d.name, len(got), got)
		}
		if w := tc.d.a.nextWait("app", tc.d.a.sources["app"], res); w < time.Second || w > 2*time.Second {
			t.Errorf("%s: next poll in %v, want at its time, 1s away", tc.d.name, w)
		}
		restarted := newAgentWith(t, tc.d.cfg, clk, tc.d.rec)
		n = e.requestCount()
		if res := one(t, poll(restarted, "app"), "waiting", d1); !res.Waiting.Until.Equal(at) || restarted.store.Has(d1) || len(e.requestsSince(n)) != 2 {
			t.Errorf("%s: after a restart %+v, in store %v, requests %v", tc.d.name, res.Waiting, restarted.store.Has(d1), e.requestsSince(n))
		}

		// At its time: downloaded, and waiting for the wave as before.
		clk.Set(at)
		res = tc.d.expect(t, "waiting", d1, d0)
		if want := "waiting for wave " + tc.wave + " (opens " + tc.opens.Format(time.RFC3339) + ")"; res.Message != want || !res.Waiting.Until.Equal(tc.opens) || !tc.d.a.store.Has(d1) {
			t.Errorf("%s: at its time %+v %+v, in store %v; want %q", tc.d.name, res, res.Waiting, tc.d.a.store.Has(d1), want)
		}
		clk.Set(tc.opens.Add(-time.Second))
		tc.d.expect(t, "waiting", d1, d0)
		clk.Set(tc.opens)
		tc.d.expect(t, "applied", d1, d1)
	}
}

// TestRolloutSpreadAtOnce: a device downloads a release of a later wave at
// once, as without the spread, when a technician reconciles, when download
// windows restrict its downloads, and when the manifest's copy of the plan
// is missing or unreadable.
func TestRolloutSpreadAtOnce(t *testing.T) {
	late := idIn("fleet/app", "dev", 1000, 10000)
	for _, tc := range []struct {
		name, global string
		annotations  map[string]string
		now          bool // reconcile --now instead of a poll
	}{
		{name: "reconcile --now", annotations: planAnnotation(t), now: true},
		{name: "download windows", annotations: planAnnotation(t),
			global: `windows: {download: [{start: "00:00", end: "24:00", timezone: UTC}]}`},
		{name: "no plan in the manifest"},
		{name: "unreadable plan", annotations: map[string]string{state.RolloutAnnotation: `{"waves": []}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			clk := newClock(created.Add(-3 * time.Hour))
			d := e.device("late", "device: {id: "+late+"}\n"+tc.global, clk, 10*time.Minute, "")
			d0 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: created.Add(-4 * time.Hour)})
			d.expect(t, "applied", d0, d0)
			d1 := e.push("fleet/app", "stable", artifact{files: withPlan(), created: created, annotations: tc.annotations})
			clk.Set(created.Add(time.Minute))
			var res apiResult
			if tc.now {
				out, err := d.a.ReconcileNow(context.Background(), "app", api.ReconcileOptions{})
				if err != nil {
					t.Fatal(err)
				}
				res = one(t, out, "waiting", d1)
			} else {
				res = d.expect(t, "waiting", d1, d0)
			}
			want := "waiting for wave all (opens " + created.Add(24*time.Hour).Format(time.RFC3339) + ")"
			if res.Message != want || !d.a.store.Has(d1) {
				t.Errorf("%+v, in store %v; want %q, downloaded", res, d.a.store.Has(d1), want)
			}
		})
	}
}

// TestRolloutSpreadUnsigned: the copy of the plan is read before the
// signature is checked, so an unsigned release with a plan is refused by
// the canary at once, and by a device of a later wave at its time in the
// spread: never applied, never downloaded.
func TestRolloutSpreadUnsigned(t *testing.T) {
	e := newEnv(t)
	clk := newClock(created.Add(-3 * time.Hour))
	late := idIn("fleet/app", "dev", 1000, 10000)
	canary := e.device("canary", "device: {id: c-1, labels: {ring: canary}}", clk, 10*time.Minute, "")
	ld := e.device("late", "device: {id: "+late+"}", clk, 10*time.Minute, "")
	d0 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: created.Add(-4 * time.Hour)})
	canary.expect(t, "applied", d0, d0)
	ld.expect(t, "applied", d0, d0)
	d1 := e.push("fleet/app", "stable", artifact{files: withPlan(), created: created, annotations: planAnnotation(t), unsigned: true})
	clk.Set(created.Add(time.Minute))
	if res := canary.expect(t, "refused", d1, d0); !strings.Contains(res.Error, "signature") {
		t.Errorf("canary: %+v", res)
	}
	res := ld.expect(t, "waiting", d1, d0)
	clk.Set(res.Waiting.Until)
	if res := ld.expect(t, "refused", d1, d0); !strings.Contains(res.Error, "signature") || ld.a.store.Has(d1) {
		t.Errorf("late device at its time: %+v, in store %v", res, ld.a.store.Has(d1))
	}
}

// fetched reports whether requests fetched one of the layers.
func fetched(requests, layers []string) bool {
	for _, r := range requests {
		for _, l := range layers {
			if strings.Contains(r, "/blobs/"+l) {
				return true
			}
		}
	}
	return false
}

// TestSpreadAt: when in the time before its wave opens a device verifies
// and downloads, at the ends of its place in the spread, around the
// intervals in which earlier waves adopt, and when the wave leaves little
// or no room.
func TestSpreadAt(t *testing.T) {
	t0 := created
	const interval = 10 * time.Minute
	canary := []time.Duration{-time.Minute} // opened just before first sight
	for _, tc := range []struct {
		name    string
		opens   time.Duration   // after seen
		earlier []time.Duration // earlier waves' openings, after seen
		busy    time.Duration
		frac    float64
		want    time.Duration // after seen
	}{
		{"first of a wave in 2h", 2 * time.Hour, canary, 11 * time.Minute, 0, interval},
		{"middle of a wave in 2h", 2 * time.Hour, canary, 11 * time.Minute, 0.5, interval + 40*time.Minute},
		{"last of a wave in 2h: a quarter before it opens", 2 * time.Hour, canary, 11 * time.Minute, 1 - 1e-12, 90 * time.Minute},
		{"a wave in a day, before the wave at 2h adopts", 24 * time.Hour, append(canary, 2*time.Hour), 11 * time.Minute, 0.05, interval + 52*time.Minute + 57*time.Second},
		{"a wave in a day, after the wave at 2h adopted", 24 * time.Hour, append(canary, 2*time.Hour), 11 * time.Minute, 0.5, 2*time.Hour + 11*time.Minute + 6*time.Hour + 59*time.Minute + 30*time.Second},
		{"a wave in 30m: one interval before it at the latest", 30 * time.Minute, canary, 11 * time.Minute, 0.5, 15 * time.Minute},
		{"a wave in 15m: one interval before it", 15 * time.Minute, canary, 11 * time.Minute, 0.9, 5 * time.Minute},
		{"a wave in one interval: at once", interval, canary, 11 * time.Minute, 0.5, 0},
		{"a wave open already: at once", -time.Hour, nil, 11 * time.Minute, 0.5, 0},
		{"earlier waves adopt all along: spread anyway", time.Hour, []time.Duration{9 * time.Minute}, time.Hour, 0.5, interval + 17*time.Minute + 30*time.Second},
	} {
		var earlier []time.Time
		for _, e := range tc.earlier {
			earlier = append(earlier, t0.Add(e))
		}
		got := spreadAt(t0, t0.Add(tc.opens), earlier, interval, tc.busy, tc.frac).Sub(t0)
		if d := got - tc.want; d < -time.Millisecond || d > time.Millisecond {
			t.Errorf("%s: at %v after first sight, want %v", tc.name, got, tc.want)
		}
	}
}

// TestSpreadFraction: the fraction is the documented formula, in [0, 1),
// and spreads a fleet evenly: 1,000 devices fill each tenth of the spread
// with about 100.
func TestSpreadFraction(t *testing.T) {
	const digest = "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b"
	var tenths [10]int
	for i := range 1000 {
		id := "d" + string(rune('0'+i/100)) + string(rune('0'+i/10%10)) + string(rune('0'+i%10))
		f := spreadFraction(id, digest)
		if f != fractionOf(id, digest) || f < 0 || f >= 1 {
			t.Fatalf("%s: %v, want %v in [0, 1)", id, f, fractionOf(id, digest))
		}
		tenths[int(f*10)]++
	}
	for i, c := range tenths {
		if c < 70 || c > 130 {
			t.Errorf("tenth %d of the spread holds %d of 1,000 devices: %v", i, c, tenths)
		}
	}
	if spreadFraction("d000", digest) == spreadFraction("d000", "sha256:"+strings.Repeat("0", 64)) {
		t.Error("a device has the same place in the spread of two releases")
	}
}
