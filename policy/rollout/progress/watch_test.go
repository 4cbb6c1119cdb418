package progress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/fleetsim"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/policy/rollout"
	"github.com/berth-dev/berth/policy/rollout/statement"
	"github.com/berth-dev/berth/reconcile/metrics"
)

// watchFleet is a canary wave of n simulated devices reporting to a real
// Prometheus, plus one device of a later, closed wave.
type watchFleet struct {
	t       *testing.T
	devices []*fleetsim.Device
	plan    tablePlan
}

func newWatchFleet(t *testing.T, p *testenv.Prometheus, n int, later time.Time) *watchFleet {
	f := &watchFleet{t: t, plan: tablePlan{waves: []Wave{{Name: "canary"}, {Name: "all", Opens: later}}, place: map[string]string{"z99": "all"}}}
	dir := t.TempDir()
	for i := range n + 1 {
		id, ls := fmt.Sprintf("c%02d", i), map[string]string{"ring": "canary"}
		if i == n {
			id, ls = "z99", map[string]string{}
		}
		d, err := fleetsim.NewDevice(fleetsim.Options{URL: p.WriteURL(), Dir: dir}, id, ls)
		if err != nil {
			t.Fatal(err)
		}
		d.Apply("line-3", before, "1.4.0", time.Now())
		f.devices = append(f.devices, d)
	}
	f.push()
	return f
}

// push sends every device's samples, timestamped now.
func (f *watchFleet) push() {
	now := time.Now()
	for _, d := range f.devices {
		d.Tick(context.Background(), now)
		if st := d.Reporter.Status(); st.LastError != "" {
			f.t.Fatalf("%s: %s", d.ID, st.LastError)
		}
	}
}

// TestWatch runs Watch against a real Prometheus fed by simulated devices:
// the canary wave adopts the release between two polls, two of its five
// devices fail it, and the breaker (20 %, at least 3 devices) trips once,
// naming them; the closed wave is not judged.
func TestWatch(t *testing.T) {
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{})
	f := newWatchFleet(t, p, 5, time.Now().Add(time.Hour))
	var pauses [][]Trip
	var reports []*Report
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := Watch(ctx, p.API(), f.plan, Query{Digest: release, Source: "line-3"}, WatchOptions{
		Breaker: &Breaker{MaxFailed: Threshold{Percent: 20, IsPercent: true}, MinDevices: 3},
		Poll:    100 * time.Millisecond,
		Pause: func(_ context.Context, r *Report, trips []Trip) error {
			pauses = append(pauses, trips)
			return nil
		},
		Observe: func(r *Report, err error) {
			if err != nil {
				t.Errorf("read: %v", err)
				return
			}
			reports = append(reports, r)
			if len(reports) != 2 {
				return
			}
			// Between the second and the third poll the canaries act.
			for i, d := range f.devices[:5] {
				d.Metrics.SetWave("line-3", release, "canary")
				if i == 1 || i == 3 {
					d.Fail("line-3", release, metrics.OutcomeFailed)
				} else {
					d.Apply("line-3", release, "1.5.0", time.Now())
				}
			}
			f.push()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != Paused || len(pauses) != 1 || res.Polls != 3 || res.Tripped.IsZero() {
		t.Fatalf("result %+v, %d pauses", res, len(pauses))
	}
	if len(res.Trips) != 1 || res.Trips[0].Wave != "canary" || !slices.Equal(res.Trips[0].Failed, []string{"c01", "c03"}) ||
		res.Trips[0].Tried != 5 || res.Trips[0].Devices != 5 {
		t.Fatalf("trips = %+v", res.Trips)
	}
	if w := reports[0].Waves[0]; w.Pending != 5 || len(w.Failed) != 0 {
		t.Errorf("first poll, canary: %+v", w)
	}
	if w := res.Report.Waves[1]; w.Open || w.Devices != 1 || w.Pending != 1 {
		t.Errorf("wave all: %+v", w)
	}
	st := Statement(rollout.Pause, release, res.Trips, res.Tripped)
	if err := st.Check(); err != nil || !strings.Contains(st.Reason, "wave canary: 2 of 5 devices that tried the release failed (5 in the wave): c01, c03") {
		t.Fatalf("statement %+v: %v", st, err)
	}
}

// TestWatchEnds covers the other ends of a watch: settled, a pause that
// could not be pushed, a deadline, and a Prometheus that does not answer.
func TestWatchEnds(t *testing.T) {
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{})
	f := newWatchFleet(t, p, 3, time.Now().Add(-time.Minute))
	for i, d := range f.devices {
		d.Metrics.SetWave("line-3", release, []string{"canary", "canary", "canary", "all"}[i])
		d.Apply("line-3", release, "1.5.0", time.Now())
	}
	f.push()
	q := Query{Digest: release, Source: "line-3"}
	noPause := func(context.Context, *Report, []Trip) error { t.Error("paused"); return nil }
	ctx := context.Background()

	// Every device healthy in open waves: complete at the first poll, with
	// or without a breaker.
	for _, b := range []*Breaker{nil, {MaxFailed: Threshold{Count: 0}}} {
		res, err := Watch(ctx, p.API(), f.plan, q, WatchOptions{Breaker: b, Pause: noPause, Poll: 50 * time.Millisecond})
		if err != nil || res.Outcome != Complete || res.Polls != 1 || res.Report.Waves[0].Healthy != 3 {
			t.Fatalf("breaker %v: %+v, %v", b, res, err)
		}
	}

	// One failure, tolerated by a count of 1: settled, not complete.
	f.devices[0].Fail("line-3", release, metrics.OutcomeRefused)
	f.push()
	res, err := Watch(ctx, p.API(), f.plan, q, WatchOptions{Breaker: &Breaker{MaxFailed: Threshold{Count: 1}}, Pause: noPause})
	if err != nil || res.Outcome != Settled || !slices.Equal(res.Report.Waves[0].Failed, []string{"c00"}) {
		t.Fatalf("tolerated failure: %+v, %v", res, err)
	}

	// The breaker trips but the statement cannot be pushed: the error says
	// the rollout must be paused.
	boom := errors.New("registry unreachable")
	res, err = Watch(ctx, p.API(), f.plan, q, WatchOptions{Breaker: &Breaker{MaxFailed: Threshold{Count: 0}},
		Pause: func(context.Context, *Report, []Trip) error { return boom }})
	if !errors.Is(err, boom) || res.Outcome != Paused || !strings.Contains(err.Error(), "must be paused (berth rollout watch: wave canary: 1 of 3") {
		t.Fatalf("pause failed: %+v, %v", res, err)
	}

	// A wave still closed: never settles; the deadline ends the watch.
	closed := tablePlan{waves: []Wave{{Name: "canary"}, {Name: "all", Opens: time.Now().Add(time.Hour)}}}
	dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	res, err = Watch(dctx, p.API(), closed, q, WatchOptions{Poll: 100 * time.Millisecond})
	if !errors.Is(err, context.DeadlineExceeded) || res.Outcome != Stopped || res.Polls < 2 || res.Report == nil {
		t.Fatalf("deadline: %+v, %v", res, err)
	}

	// Prometheus gone: MaxErrors reads in a row fail, the error says so.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	api, err := NewClient(ClientOptions{URL: dead, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	res, err = Watch(ctx, api, f.plan, q, WatchOptions{Poll: 10 * time.Millisecond, MaxErrors: 3})
	if err == nil || !errors.Is(err, ErrQuery) || res.Polls != 3 || !strings.Contains(err.Error(), "3 reads of the rollout") {
		t.Fatalf("dead Prometheus: %+v, %v", res, err)
	}
	if _, err := Watch(ctx, api, f.plan, q, WatchOptions{Breaker: &Breaker{}}); err == nil {
		t.Fatal("a breaker without Pause accepted")
	}
}

// TestReason cuts a long list of failing devices to what a statement
// carries, on a character boundary.
func TestReason(t *testing.T) {
	var ids []string
	for i := range 400 {
		ids = append(ids, fmt.Sprintf("gerät-%03d", i))
	}
	trips := []Trip{{Wave: "canary", Failed: ids, Tried: 400, Devices: 500}}
	full := Reason(trips, 0)
	if !strings.HasPrefix(full, "berth rollout watch: wave canary: 400 of 400 devices that tried the release failed (500 in the wave): gerät-000, ") {
		t.Fatalf("reason: %.120s", full)
	}
	for _, max := range []int{statement.MaxReason, 100, 101, 102} {
		r := Reason(trips, max)
		if len(r) > max || !utf8.ValidString(r) || !strings.HasSuffix(r, " …") {
			t.Errorf("max %d: %d bytes, valid %v: %q", max, len(r), utf8.ValidString(r), r)
		}
	}
	st := Statement(rollout.Abort, release, trips, time.Now())
	if err := st.Check(); err != nil || st.Action != rollout.Abort || st.SignedAt.Nanosecond() != 0 {
		t.Fatalf("statement: %+v, %v", st, err)
	}
}
