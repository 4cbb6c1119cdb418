package reconcile

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/policy/inhibit"
	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/store"
)

// nightly is the apply window of the issue: weeknights 22:00 to 05:00 in
// Berlin, crossing midnight.
const nightly = `windows:
  apply:
    - {days: [mon, tue, wed, thu, fri], start: "22:00", end: "05:00", timezone: Europe/Berlin}
`

// berlin returns the wall-clock time in Europe/Berlin.
func berlin(t *testing.T, y int, m time.Month, d, hh, mm int) time.Time {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	return time.Date(y, m, d, hh, mm, 0, 0, loc)
}

// next publishes a new release of fleet/app:stable, signed later than the
// one before (the downgrade check needs an order; windows do not look at
// the created time).
func (e *env) next() string {
	e.t.Helper()
	return e.push("fleet/app", "stable", artifact{files: withState(nil), created: time.Date(2026, 1, 1, 0, int(e.seq.Load())+1, 0, 0, time.UTC)})
}

// layers returns the digests of the layers of repo@digest.
func (e *env) layers(repo, digest string) []string {
	e.t.Helper()
	img, err := remote.Image(e.digestName(repo, digest), e.client.RemoteOptions(context.Background())...)
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, l := range m.Layers {
		out = append(out, l.Digest.String())
	}
	return out
}

// TestApplyWindows moves the agent's clock (never sleeping) across the
// nightly window: a new revision is downloaded and verified at once but
// switched in and applied only inside the window, crossing midnight into
// the next day and until (not at) its end, never on a night that starts on
// a weekend day; status and the poll after the wait say when it opens; and
// `reconcile --now --ignore-windows` applies outside it.
func TestApplyWindows(t *testing.T) {
	e := newEnv(t)
	clk := newClock(berlin(t, 2026, 12, 7, 23, 0)) // Monday night: inside
	d := e.device("press", "device: {id: press-07}\n"+nightly, clk, 10*time.Minute, "")
	d0 := e.next()
	d.expect(t, "applied", d0, d0)

	// Tuesday noon: outside. Prefetched, not applied; the wait ends at
	// Tuesday 22:00 Berlin (21:00 UTC).
	clk.Set(berlin(t, 2026, 12, 8, 12, 0))
	d1 := e.next()
	opens := berlin(t, 2026, 12, 8, 22, 0)
	res := d.expect(t, "waiting", d1, d0)
	if res.Waiting == nil || res.Waiting.Reason != store.WaitWindow || !res.Waiting.Until.Equal(opens) ||
		!strings.Contains(res.Message, "waiting for the apply window (opens 2026-12-08T21:00:00Z") {
		t.Errorf("outside the window: %+v %+v", res, res.Waiting)
	}
	if !d.a.store.Has(d1) {
		t.Error("the revision waiting for the window was not prefetched")
	}
	if n := d.rec.count(); n != 1 {
		t.Errorf("%d applies outside the window, want only d0's", n)
	}
	st := d.a.Status().Sources[0]
	if w := st.Windows; w == nil || w.ApplyOpen || !w.NextApply.Equal(opens) || !strings.Contains(w.Apply, "22:00-05:00 Europe/Berlin") || w.Download != "always" {
		t.Errorf("status windows = %+v", st.Windows)
	}
	if w := d.a.nextWait("app", d.a.sources["app"], res); w < 10*time.Minute || w > 10*time.Minute+time.Second {
		t.Errorf("next poll in %v: a window 10h away does not shorten the interval", w)
	}
	clk.Set(opens.Add(-2 * time.Minute))
	res = d.expect(t, "waiting", d1, d0)
	if w := d.a.nextWait("app", d.a.sources["app"], res); w < 2*time.Minute || w > 2*time.Minute+time.Second {
		t.Errorf("next poll in %v, want at the window's opening, 2m away", w)
	}
	clk.Set(opens.Add(-time.Second))
	d.expect(t, "waiting", d1, d0)
	clk.Set(opens)
	d.expect(t, "applied", d1, d1)
	if st := d.a.Status().Sources[0]; st.Windows == nil || !st.Windows.ApplyOpen || st.Waiting != nil {
		t.Errorf("status inside the window: windows %+v, waiting %+v", st.Windows, st.Waiting)
	}

	// Past midnight, the window of Tuesday night is still open until
	// Wednesday 05:00, and closed at 05:00.
	for _, tc := range []struct {
		at      time.Time
		outcome string
	}{
		{berlin(t, 2026, 12, 9, 0, 30), "applied"},  // Wednesday 00:30
		{berlin(t, 2026, 12, 9, 4, 59), "applied"},  // Wednesday 04:59
		{berlin(t, 2026, 12, 9, 5, 0), "waiting"},   // Wednesday 05:00: the end is not inside
		{berlin(t, 2026, 12, 12, 3, 0), "applied"},  // Saturday 03:00: Friday's night
		{berlin(t, 2026, 12, 12, 23, 0), "waiting"}, // Saturday 23:00: no window starts on a Saturday
		{berlin(t, 2026, 12, 14, 3, 0), "waiting"},  // Monday 03:00: nor on a Sunday
		{berlin(t, 2026, 12, 14, 22, 0), "applied"}, // Monday 22:00
	} {
		clk.Set(tc.at)
		before := d.current(t)
		next := e.next()
		want := next
		if tc.outcome == "waiting" {
			want = before
		}
		res := d.expect(t, tc.outcome, next, want)
		if tc.outcome == "waiting" {
			opens := berlin(t, 2026, 12, tc.at.Day(), 22, 0)
			if tc.at.Weekday() == time.Saturday || tc.at.Weekday() == time.Sunday {
				opens = berlin(t, 2026, 12, 14, 22, 0) // Monday
			}
			if res.Waiting == nil || !res.Waiting.Until.Equal(opens) {
				t.Errorf("at %s: waiting %+v, want until %s", tc.at, res.Waiting, opens)
			}
		}
	}

	// On site, outside the window: --ignore-windows applies at once; an
	// ordinary poll or reconcile --now does not.
	clk.Set(berlin(t, 2026, 12, 15, 10, 0))
	d2 := e.next()
	prev := d.current(t)
	d.expect(t, "waiting", d2, prev)
	got, err := d.a.ReconcileNow(context.Background(), "app", api.ReconcileOptions{})
	if err != nil || len(got) != 1 || got[0].Outcome != "waiting" || d.current(t) != prev {
		t.Fatalf("reconcile --now outside the window: %+v %v", got, err)
	}
	got, err = d.a.ReconcileNow(context.Background(), "app", api.ReconcileOptions{IgnoreWindows: true})
	if err != nil || len(got) != 1 || got[0].Outcome != "applied" || got[0].Digest != d2 || d.current(t) != d2 {
		t.Fatalf("reconcile --now --ignore-windows: %+v %v", got, err)
	}
}

// TestApplyWindowsDST: the window is wall-clock time in its zone across
// both daylight saving changes of Europe/Berlin. A window of Saturday
// 22:00 to Sunday 05:00 is an hour shorter in UTC on the night clocks go
// forward and an hour longer on the night they go back; a fixed offset
// would be wrong by an hour at the instants checked here.
func TestApplyWindowsDST(t *testing.T) {
	e := newEnv(t)
	utc := func(mo time.Month, d, h, m int) time.Time { return time.Date(2026, mo, d, h, m, 0, 0, time.UTC) }
	clk := newClock(utc(3, 28, 21, 30)) // Saturday 22:30 CET
	d := e.device("press", `device: {id: press-07}
windows:
  apply: [{days: [sat], start: "22:00", end: "05:00", timezone: Europe/Berlin}]
`, clk, time.Hour, "")
	d0 := e.next()
	d.expect(t, "applied", d0, d0)
	for _, tc := range []struct {
		name    string
		at      time.Time
		outcome string
		until   time.Time // when waiting
	}{
		// 29 March, 02:00 CET becomes 03:00 CEST: 05:00 is 03:00 UTC.
		{"spring, 04:30 CEST", utc(3, 29, 2, 30), "applied", time.Time{}},
		{"spring, 05:00 CEST", utc(3, 29, 3, 0), "waiting", utc(4, 4, 20, 0)}, // next Saturday 22:00 CEST
		{"spring, 05:30 CEST", utc(3, 29, 3, 30), "waiting", utc(4, 4, 20, 0)},
		// 25 October, 03:00 CEST becomes 02:00 CET: 22:00 is 20:00 UTC,
		// 05:00 is 04:00 UTC.
		{"autumn, 21:59 CEST", utc(10, 24, 19, 59), "waiting", utc(10, 24, 20, 0)},
		{"autumn, 22:00 CEST", utc(10, 24, 20, 0), "applied", time.Time{}},
		{"autumn, 04:30 CET", utc(10, 25, 3, 30), "applied", time.Time{}},
		{"autumn, 05:00 CET", utc(10, 25, 4, 0), "waiting", utc(10, 31, 21, 0)}, // next Saturday 22:00 CET
	} {
		clk.Set(tc.at)
		before := d.current(t)
		next := e.next()
		want := next
		if tc.outcome == "waiting" {
			want = before
		}
		res := d.poll()
		if res.Outcome != tc.outcome || res.Digest != next || d.current(t) != want {
			t.Errorf("%s: poll = %+v, current %s, want %s", tc.name, res, short(d.current(t)), tc.outcome)
			continue
		}
		if tc.outcome == "waiting" && (res.Waiting == nil || !res.Waiting.Until.Equal(tc.until)) {
			t.Errorf("%s: waiting %+v, want until %s", tc.name, res.Waiting, tc.until)
		}
	}
}

// TestDownloadWindows: outside the download windows a new revision is not
// even fetched (the tag is resolved, nothing more); inside them it is
// prefetched and then waits for the apply window; --ignore-windows fetches
// and applies outside both.
func TestDownloadWindows(t *testing.T) {
	e := newEnv(t)
	clk := newClock(berlin(t, 2026, 12, 7, 23, 0))
	d := e.device("press", `device: {id: press-07}
windows:
  apply: [{days: [mon, tue, wed, thu, fri], start: "22:00", end: "05:00", timezone: Europe/Berlin}]
  download: [{days: [mon, tue, wed, thu, fri, sat, sun], start: "12:00", end: "14:00", timezone: Europe/Berlin}]
`, clk, time.Hour, "")
	// Monday 23:00 is outside the download window: the first revision
	// waits too.
	d0 := e.next()
	res := d.poll()
	if res.Outcome != "waiting" || res.Waiting == nil || res.Waiting.Reason != store.WaitDownload || d.a.store.Has(d0) {
		t.Fatalf("outside the download window: %+v %+v, in store %v", res, res.Waiting, d.a.store.Has(d0))
	}
	n := e.requestCount()
	d.poll()
	layers := e.layers("fleet/app", d0)
	for _, r := range e.requestsSince(n) {
		for _, l := range layers {
			if strings.Contains(r, "/blobs/"+l) {
				t.Errorf("a poll outside the download window fetched the payload: %s", r)
			}
		}
	}
	if len(layers) == 0 {
		t.Fatal("no layers: the check above proves nothing")
	}
	// Tuesday 12:30: prefetched, waits for the apply window.
	clk.Set(berlin(t, 2026, 12, 8, 12, 30))
	res = d.poll()
	if res.Outcome != "waiting" || res.Waiting == nil || res.Waiting.Reason != store.WaitWindow || !d.a.store.Has(d0) {
		t.Fatalf("inside the download window: %+v %+v, in store %v", res, res.Waiting, d.a.store.Has(d0))
	}
	// Tuesday 22:00: applied from the store, outside the download window.
	clk.Set(berlin(t, 2026, 12, 8, 22, 0))
	d.expect(t, "applied", d0, d0)

	clk.Set(berlin(t, 2026, 12, 9, 9, 0))
	d1 := e.next()
	got, err := d.a.ReconcileNow(context.Background(), "app", api.ReconcileOptions{IgnoreWindows: true})
	if err != nil || got[0].Outcome != "applied" || d.current(t) != d1 {
		t.Fatalf("--ignore-windows outside both windows: %+v %v", got, err)
	}
}

// TestInhibitors: an inhibitor on an app of the source holds a new
// revision back (prefetched) and status says who holds it and until
// when; it holds until it expires on the agent's clock, not a second
// less; one released early holds nothing; --ignore-windows does not
// override it.
func TestInhibitors(t *testing.T) {
	e := newEnv(t)
	clk := newClock(time.Date(2026, 12, 8, 9, 0, 0, 0, time.UTC))
	d := e.device("press", "device: {id: press-07}", clk, time.Minute, "")
	d0 := e.next()
	d.expect(t, "applied", d0, d0)

	inh := inhibit.Open(inhibit.Dir(d.cfg.StateDir))
	until := clk.Now().Add(30 * time.Minute)
	if _, err := inh.Set(inhibit.Inhibitor{App: "web", Until: until, Reason: "batch running", By: "mes"}, clk.Now()); err != nil {
		t.Fatal(err)
	}
	d1 := e.next()
	res := d.expect(t, "waiting", d1, d0)
	if res.Waiting == nil || res.Waiting.Reason != store.WaitInhibitor || !res.Waiting.Until.Equal(until) ||
		!strings.Contains(res.Message, "web") || !strings.Contains(res.Message, "batch running") {
		t.Errorf("inhibited: %+v %+v", res, res.Waiting)
	}
	if !d.a.store.Has(d1) {
		t.Error("the inhibited revision was not prefetched")
	}
	st := d.a.Status().Sources[0]
	if len(st.Inhibitors) != 1 || st.Inhibitors[0].App != "web" || !st.Inhibitors[0].Until.Equal(until) || st.Inhibitors[0].By != "mes" {
		t.Errorf("status inhibitors = %+v", st.Inhibitors)
	}
	got, err := d.a.ReconcileNow(context.Background(), "app", api.ReconcileOptions{IgnoreWindows: true})
	if err != nil || got[0].Outcome != "waiting" || d.current(t) != d0 {
		t.Errorf("--ignore-windows overrode an inhibitor: %+v %v", got, err)
	}
	clk.Set(until.Add(-time.Second))
	d.expect(t, "waiting", d1, d0)
	clk.Set(until) // expired: ignored
	d.expect(t, "applied", d1, d1)
	if st := d.a.Status().Sources[0]; len(st.Inhibitors) != 0 {
		t.Errorf("status shows an expired inhibitor: %+v", st.Inhibitors)
	}

	// Released before it expires: holds nothing.
	if _, err := inh.Set(inhibit.Inhibitor{App: "web", Until: clk.Now().Add(time.Hour), Reason: "shift"}, clk.Now()); err != nil {
		t.Fatal(err)
	}
	d2 := e.next()
	d.expect(t, "waiting", d2, d1)
	if ok, err := inh.Release("web"); !ok || err != nil {
		t.Fatalf("release: %v %v", ok, err)
	}
	d.expect(t, "applied", d2, d2)

	// An inhibitor of an app this source does not run holds nothing.
	if _, err := inh.Set(inhibit.Inhibitor{App: "other", Until: clk.Now().Add(time.Hour)}, clk.Now()); err != nil {
		t.Fatal(err)
	}
	d3 := e.next()
	d.expect(t, "applied", d3, d3)
}
