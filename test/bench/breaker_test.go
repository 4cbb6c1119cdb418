package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/fleetsim"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/policy/rollout"
	"github.com/berth-dev/berth/policy/rollout/progress"
	"github.com/berth-dev/berth/reconcile/metrics"
	"github.com/berth-dev/berth/state"
)

// BenchmarkBreakerFleet measures the circuit breaker of berth rollout watch
// (progress.Watch) on a fleet of N simulated devices (BERTH_BENCH_DEVICES,
// default 1000) reporting to one real Prometheus: a release with a canary
// wave (2 % by label), an early wave (10 % by bucket, open) and the rest an
// hour later. The canaries and the early wave adopt it; one early device
// in ten fails it. Watch (poll 1 s, --max-failed 5%, --min-devices 10)
// must trip on the early wave.
//
// Reported: s-to-pause, from the failing devices starting to push their
// failures to Watch calling Pause (at most the push, one poll and one
// read); read-s, the time
// of one Read of the whole fleet (its 8 PromQL queries). It checks that
// the report Watch tripped on counts exactly what the simulation did, per
// wave: devices, healthy, failed (by id), waiting.
func BenchmarkBreakerFleet(b *testing.B) {
	n := 1000
	if s := getenvInt(b, "BERTH_BENCH_DEVICES"); s > 0 {
		n = s
	}
	for range b.N {
		runBreaker(b, n)
	}
}

func getenvInt(b *testing.B, key string) int {
	s := os.Getenv(key)
	if s == "" {
		return 0
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		b.Fatalf("%s=%q", key, s)
	}
	return v
}

func runBreaker(b *testing.B, devices int) {
	const (
		repo   = "fleet/line-3"
		source = "line-3"
	)
	release := "sha256:" + fmt.Sprintf("%064x", 2)
	old := "sha256:" + fmt.Sprintf("%064x", 1)
	created := time.Now().Truncate(time.Second)
	plan := &state.Rollout{Waves: []state.Wave{
		{Name: "canary", Selector: map[string]string{"ring": "canary"}},
		{Name: "early", Percent: 10},
		{Name: "all", Percent: 100, After: time.Hour},
	}}
	p := testenv.StartPrometheus(b, testenv.PrometheusOptions{Args: []string{fmt.Sprintf("--web.max-connections=%d", 2*devices+100)}})
	o := fleetsim.Options{URL: p.WriteURL(), Dir: b.TempDir()}
	fleet := make([]*fleetsim.Device, devices)
	for i := range fleet {
		labels := map[string]string{"line": strconv.Itoa(i % 12), "site": "berlin"}
		if i%50 == 0 {
			labels["ring"] = "canary"
		}
		d, err := fleetsim.NewDevice(o, fmt.Sprintf("press-%04d", i), labels)
		if err != nil {
			b.Fatal(err)
		}
		d.Apply(source, old, "1.4.0", time.Now())
		fleet[i] = d
	}
	push := func(ds []*fleetsim.Device) {
		each(ds, func(_ int, d *fleetsim.Device) {
			d.Tick(context.Background(), time.Now())
			if st := d.Reporter.Status(); st.LastError != "" {
				b.Fatalf("%s: %s", d.ID, st.LastError)
			}
		})
	}
	push(fleet)

	// The ground truth: every device decides with the rollout policy.
	type truth struct{ devices, healthy, waiting int }
	want := map[string]*truth{"canary": {}, "early": {}, "all": {}}
	var early, failing []*fleetsim.Device
	var failedIDs []string
	var mu sync.Mutex
	each(fleet, func(_ int, d *fleetsim.Device) {
		dec, err := rollout.Decide(rollout.Input{Plan: plan, Created: created, Device: rollout.Device{ID: d.ID, Labels: d.Labels}, Repository: repo, Now: time.Now()})
		if err != nil {
			b.Fatal(err)
		}
		w := dec.Placement.Name
		d.Metrics.SetWave(source, release, w)
		mu.Lock()
		defer mu.Unlock()
		want[w].devices++
		switch {
		case dec.Verdict == rollout.Adopt && w == "early":
			early = append(early, d)
		case dec.Verdict == rollout.Adopt:
			d.Apply(source, release, "1.5.0", time.Now())
			want[w].healthy++
		default:
			d.Metrics.SetOutcome(source, release, metrics.OutcomeWaiting)
			d.Metrics.SetWaiting(source, release, metrics.WaitWave, dec.Opens)
			want[w].waiting++
		}
	})
	// One early device in ten fails the release (when it fails below).
	slices.SortFunc(early, func(a, c *fleetsim.Device) int { return strings.Compare(a.ID, c.ID) })
	for i, d := range early {
		if i%10 == 0 {
			failing = append(failing, d)
			failedIDs = append(failedIDs, d.ID)
			continue
		}
		d.Apply(source, release, "1.5.0", time.Now())
		want["early"].healthy++
	}
	if len(early) < 10 {
		b.Fatalf("%d devices in the early wave: the breaker needs 10 (BERTH_BENCH_DEVICES ≥ 100)", len(early))
	}
	push(fleet)

	q := progress.Query{Digest: release, Source: source}
	pl := progress.NewPlan(plan, created, repo)
	readStart := time.Now()
	r, err := progress.Read(context.Background(), p.API(), pl, q)
	if err != nil {
		b.Fatal(err)
	}
	readTime := time.Since(readStart)
	if trips := (progress.Breaker{MaxFailed: progress.Threshold{Percent: 5, IsPercent: true}, MinDevices: 10}).Check(r); len(trips) != 0 {
		b.Fatalf("tripped before any failure: %+v", trips)
	}

	tripped := make(chan *progress.WatchResult, 1)
	var pausedAt time.Time
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	go func() {
		res, err := progress.Watch(ctx, p.API(), pl, q, progress.WatchOptions{
			Breaker: &progress.Breaker{MaxFailed: progress.Threshold{Percent: 5, IsPercent: true}, MinDevices: 10},
			Poll:    time.Second,
			Pause: func(context.Context, *progress.Report, []progress.Trip) error {
				pausedAt = time.Now()
				return nil
			},
		})
		if err != nil {
			b.Error(err)
		}
		tripped <- res
	}()
	time.Sleep(1500 * time.Millisecond) // a poll or two with no failure
	failedAt := time.Now()
	for _, d := range failing {
		d.Fail(source, release, metrics.OutcomeFailed)
	}
	push(failing)
	res := <-tripped
	if res == nil || res.Outcome != progress.Paused {
		b.Fatalf("watch: %+v", res)
	}
	if len(res.Trips) != 1 || res.Trips[0].Wave != "early" || !slices.Equal(res.Trips[0].Failed, failedIDs) {
		b.Fatalf("trips %+v, want early with %v", res.Trips, failedIDs)
	}
	for _, w := range res.Report.Waves {
		t := want[w.Name]
		failed := 0
		if w.Name == "early" {
			failed = len(failedIDs)
		}
		if t == nil || w.Devices != t.devices || w.Healthy != t.healthy || len(w.Failed) != failed || sum(w.Waiting) != t.waiting || w.Pending != 0 || len(w.Unseen) != 0 {
			b.Fatalf("wave %s: %+v, the simulation: %+v and %d failed", w.Name, w, t, failed)
		}
	}
	b.ReportMetric(pausedAt.Sub(failedAt).Seconds(), "s-to-pause")
	b.ReportMetric(readTime.Seconds(), "read-s")
	b.ReportMetric(float64(len(failedIDs)), "failed-devices")
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
