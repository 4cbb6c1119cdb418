package rollout

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/state"
)

// plan is the plan of the issue: a canary ring, then 10 %, then everyone.
func plan(t testing.TB) *state.Rollout {
	t.Helper()
	st, err := state.Parse(state.FileName, []byte(`apiVersion: berth.dev/v1
kind: DeviceState
apps: []
rollout:
  waves:
    - {name: canary, selector: {ring: canary}}
    - {name: lab, selector: {site: lab, ring: canary}, after: 30m}
    - {name: early, percent: 10, after: 2h}
    - {name: half, percent: 50, after: 6h}
    - {name: all, percent: 100, after: 24h}
`))
	if err != nil {
		t.Fatal(err)
	}
	return st.Rollout
}

// TestBucket pins the hash to values computed independently with
// sha256sum (see the doc of Bucket), so that it never changes silently:
// a change would reshuffle every fleet's waves.
func TestBucket(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want int
	}{{"press-07", 1785}, {"d000", 791}, {"d199", 5553}} {
		if got := Bucket(tc.id, "fleet/line-3"); got != tc.want {
			t.Errorf("Bucket(%s) = %d, want %d", tc.id, got, tc.want)
		}
	}
	if Bucket("press-07", "fleet/line-3") == Bucket("press-07", "fleet/line-4") &&
		Bucket("d000", "fleet/line-3") == Bucket("d000", "fleet/line-4") {
		t.Error("the repository does not change the buckets")
	}
}

func TestPlace(t *testing.T) {
	p := plan(t)
	// Find ids in known buckets, independently of Place.
	idIn := func(lo, hi int) string {
		for i := 0; ; i++ {
			id := fmt.Sprintf("dev-%d", i)
			if b := Bucket(id, "fleet/line-3"); b >= lo && b < hi {
				return id
			}
		}
	}
	for _, tc := range []struct {
		name     string
		dev      Device
		wave     string
		selected bool
	}{
		{"canary label", Device{ID: idIn(9000, 10000), Labels: map[string]string{"ring": "canary"}}, "canary", true},
		{"first matching selector wins", Device{ID: idIn(0, 100), Labels: map[string]string{"ring": "canary", "site": "lab"}}, "canary", true},
		{"label not matching", Device{ID: idIn(0, 1000), Labels: map[string]string{"ring": "stable"}}, "early", false},
		{"bucket 0", Device{ID: idIn(0, 1)}, "early", false},
		{"bucket 999", Device{ID: idIn(999, 1000)}, "early", false},
		{"bucket 1000", Device{ID: idIn(1000, 1001)}, "half", false},
		{"bucket 4999", Device{ID: idIn(4999, 5000)}, "half", false},
		{"bucket 5000", Device{ID: idIn(5000, 5001)}, "all", false},
		{"bucket 9999", Device{ID: idIn(9999, 10000)}, "all", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Place(p, tc.dev, "fleet/line-3")
			if got.Name != tc.wave || got.Selected != tc.selected || p.Waves[got.Wave].Name != tc.wave {
				t.Errorf("Place(%s, bucket %d) = %+v, want wave %s selected %v", tc.dev.ID, Bucket(tc.dev.ID, "fleet/line-3"), got, tc.wave, tc.selected)
			}
			if got.Bucket != Bucket(tc.dev.ID, "fleet/line-3") {
				t.Errorf("bucket = %d", got.Bucket)
			}
		})
	}
	if got := Place(nil, Device{ID: "x"}, "r"); got.Name != "" || got.Wave != 0 {
		t.Errorf("Place without plan = %+v", got)
	}
}

// TestPlacePercentages is a property test: over many ids, the share of
// devices in each percentage wave is the difference of the cumulative
// percentages, within six standard deviations; and the same ids land in
// the same waves in another call (stable across releases).
func TestPlacePercentages(t *testing.T) {
	p := plan(t)
	const n = 100000
	for _, repo := range []string{"fleet/line-3", "acme/other"} {
		counts := map[string]int{}
		for i := range n {
			id := fmt.Sprintf("%08x-device", i*7919)
			pl := Place(p, Device{ID: id}, repo)
			if pl.Selected {
				t.Fatalf("%s placed by a selector without labels", id)
			}
			counts[pl.Name]++
		}
		for _, w := range []struct {
			name  string
			share float64
		}{{"early", 0.10}, {"half", 0.40}, {"all", 0.50}} {
			got := float64(counts[w.name]) / n
			sd := math.Sqrt(w.share * (1 - w.share) / n)
			if math.Abs(got-w.share) > 6*sd {
				t.Errorf("%s: wave %s has %.4f of the devices, want %.2f ± %.4f", repo, w.name, got, w.share, 6*sd)
			}
		}
		if counts["canary"]+counts["lab"] != 0 {
			t.Errorf("selector waves got %d unlabelled devices", counts["canary"]+counts["lab"])
		}
	}
	// Stability: placing again gives the same waves.
	for i := range 1000 {
		id := fmt.Sprintf("stable-%d", i)
		a, b := Place(p, Device{ID: id}, "fleet/line-3"), Place(p, Device{ID: id}, "fleet/line-3")
		if a != b {
			t.Fatalf("%s placed in %v then %v", id, a, b)
		}
	}
}

func TestOpensAndLookups(t *testing.T) {
	p := plan(t)
	created := time.Date(2026, 12, 8, 8, 0, 0, 0, time.UTC)
	want := []time.Duration{0, 30 * time.Minute, 2 * time.Hour, 6 * time.Hour, 24 * time.Hour}
	for i, o := range Opens(p, created) {
		if !o.Equal(created.Add(want[i])) {
			t.Errorf("wave %d opens %v, want %v", i, o, created.Add(want[i]))
		}
	}
	if Opens(nil, created) != nil || !End(nil, created).Equal(created) {
		t.Error("no plan: no opens, ends at created")
	}
	iv := 5 * time.Minute
	end := created.Add(24*time.Hour + iv)
	for _, tc := range []struct {
		name      string
		plan      *state.Rollout
		firstSeen time.Time
		now       time.Time
		want      bool
	}{
		{"no plan", nil, created, created, false},
		{"first sight", p, created.Add(time.Minute), created.Add(time.Minute), true},
		{"mid rollout", p, created, created.Add(10 * time.Hour), true},
		{"just before the end", p, created, end.Add(-time.Second), true},
		{"end", p, created, end, false},
		{"steady state", p, created, end.Add(30 * 24 * time.Hour), false},
		{"first seen late: one interval", p, end.Add(time.Hour), end.Add(time.Hour), true},
		{"first seen late, an interval later", p, end.Add(time.Hour), end.Add(time.Hour + iv), false},
		{"clock before created", p, created.Add(-time.Hour), created.Add(-time.Hour), true},
	} {
		if got := Lookups(tc.plan, created, tc.firstSeen, tc.now, iv); got != tc.want {
			t.Errorf("%s: Lookups = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestDecide(t *testing.T) {
	p := plan(t)
	created := time.Date(2026, 12, 8, 8, 0, 0, 0, time.UTC)
	canary := Device{ID: "c1", Labels: map[string]string{"ring": "canary"}}
	var early, all Device
	for i := 0; early.ID == "" || all.ID == ""; i++ {
		id := fmt.Sprintf("d%03d", i)
		switch b := Bucket(id, "fleet/line-3"); {
		case b < 1000 && early.ID == "":
			early.ID = id
		case b >= 5000 && all.ID == "":
			all.ID = id
		}
	}
	for _, tc := range []struct {
		name      string
		dev       Device
		plan      *state.Rollout
		action    Action
		onRelease bool
		now       time.Time
		want      Verdict
		opens     time.Duration
		reason    string
	}{
		{"no plan adopts", early, nil, None, false, created, Adopt, 0, ""},
		{"no plan, on it", early, nil, None, true, created, Keep, 0, ""},
		{"canary at created", canary, p, None, false, created, Adopt, 0, "wave canary is open (since 2026-12-08T08:00:00Z)"},
		{"early waits", early, p, None, false, created.Add(time.Hour), WaitWave, 2 * time.Hour, "waiting for wave early (opens 2026-12-08T10:00:00Z)"},
		{"early a second before", early, p, None, false, created.Add(2*time.Hour - time.Second), WaitWave, 2 * time.Hour, "waiting for wave early"},
		{"early at opening", early, p, None, false, created.Add(2 * time.Hour), Adopt, 2 * time.Hour, "wave early is open"},
		{"all still waits", all, p, None, false, created.Add(12 * time.Hour), WaitWave, 24 * time.Hour, "waiting for wave all (opens 2026-12-09T08:00:00Z)"},
		{"all adopts", all, p, Resume, false, created.Add(25 * time.Hour), Adopt, 24 * time.Hour, "wave all is open"},
		{"clock before created", canary, p, None, false, created.Add(-time.Minute), WaitClock, 0, "device clock (2026-12-08T07:59:00Z) is before the release's created time (2026-12-08T08:00:00Z)"},
		{"paused", early, p, Pause, false, created.Add(3 * time.Hour), Paused, 2 * time.Hour, "paused"},
		{"paused, on it: stays", early, p, Pause, true, created.Add(3 * time.Hour), Keep, 2 * time.Hour, "stay"},
		{"paused before its wave", all, p, Pause, false, created.Add(time.Hour), Paused, 24 * time.Hour, "paused"},
		{"resume follows the plan", all, p, Resume, false, created.Add(time.Hour), WaitWave, 24 * time.Hour, "waiting for wave all"},
		{"aborted", all, p, Abort, false, created.Add(30 * time.Hour), Aborted, 24 * time.Hour, "not adopted"},
		{"aborted, on it: revert", canary, p, Abort, true, created.Add(time.Hour), Revert, 0, "going back"},
		{"abort without plan", early, nil, Abort, true, created, Revert, 0, "going back"},
		{"on it, wave not open (adopted before the plan said so elsewhere)", all, p, None, true, created, Keep, 24 * time.Hour, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Decide(Input{Plan: tc.plan, Created: created, Device: tc.dev, Repository: "fleet/line-3", Action: tc.action, OnRelease: tc.onRelease, Now: tc.now})
			if err != nil {
				t.Fatal(err)
			}
			if d.Verdict != tc.want {
				t.Errorf("verdict = %s, want %s (%+v)", d.Verdict, tc.want, d)
			}
			if tc.plan != nil && !d.Opens.Equal(created.Add(tc.opens)) {
				t.Errorf("opens = %v, want %v", d.Opens, created.Add(tc.opens))
			}
			if !contains(d.Reason, tc.reason) {
				t.Errorf("reason = %q, want it to contain %q", d.Reason, tc.reason)
			}
			if d.Waiting() != (tc.want == WaitWave || tc.want == WaitClock || tc.want == Paused) {
				t.Errorf("Waiting = %v for %s", d.Waiting(), d.Verdict)
			}
		})
	}
	if _, err := Decide(Input{Plan: p, Device: early, Now: created}); err == nil {
		t.Error("a plan without created time decided")
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestParseAction(t *testing.T) {
	for _, s := range []string{"pause", "resume", "abort"} {
		if a, err := ParseAction(s); err != nil || string(a) != s {
			t.Errorf("ParseAction(%s) = %v, %v", s, a, err)
		}
	}
	for _, s := range []string{"", "Pause", "stop"} {
		if _, err := ParseAction(s); err == nil {
			t.Errorf("ParseAction(%q) succeeded", s)
		}
	}
}

func TestDescribe(t *testing.T) {
	p := plan(t)
	created := time.Date(2026, 12, 8, 8, 0, 0, 0, time.UTC)
	got := Describe(p, created, created.Add(2*time.Hour))
	if len(got) != 5 {
		t.Fatalf("%d waves", len(got))
	}
	for i, want := range []struct {
		name  string
		after string
		open  bool
	}{{"canary", "0s", true}, {"lab", "30m0s", true}, {"early", "2h0m0s", true}, {"half", "6h0m0s", false}, {"all", "24h0m0s", false}} {
		if g := got[i]; g.Name != want.name || g.After != want.after || g.Open != want.open || !g.Opens.Equal(created.Add(p.Waves[i].After)) {
			t.Errorf("wave %d = %+v, want %+v", i, g, want)
		}
	}
	if got[0].Selector["ring"] != "canary" || got[2].Percent != 10 {
		t.Errorf("selector / percent lost: %+v", got)
	}
	if Describe(nil, created, created) != nil {
		t.Error("no plan described")
	}
}

func TestCreated(t *testing.T) {
	got, err := Created(map[string]string{CreatedAnnotation: "2026-12-08T09:00:00+01:00"})
	if err != nil || !got.Equal(time.Date(2026, 12, 8, 8, 0, 0, 0, time.UTC)) {
		t.Errorf("Created = %v, %v", got, err)
	}
	for _, a := range []map[string]string{nil, {CreatedAnnotation: "yesterday"}, {CreatedAnnotation: ""}} {
		if _, err := Created(a); !errors.Is(err, ErrNoCreated) {
			t.Errorf("Created(%v) = %v, want ErrNoCreated", a, err)
		}
	}
}
