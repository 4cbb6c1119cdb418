package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/reconcile"
	"github.com/berth-dev/berth/reconcile/config"
	"github.com/berth-dev/berth/state"
)

// fleetEnv sets the number of simulated devices of BenchmarkFleetRollout.
const fleetEnv = "BERTH_BENCH_FLEET"

// nopApplier applies nothing: the fleet simulation measures the agents'
// registry traffic and rollout decisions, not Docker.
type nopApplier struct{}

func (nopApplier) Kind() string { return "compose" }
func (nopApplier) Apply(_ context.Context, rev state.Revision, _ *state.Revision) ([]state.AppStatus, error) {
	return []state.AppStatus{{Name: "web", Kind: "compose", Outcome: "applied"}}, nil
}

var _ reconcile.Applier = nopApplier{}

// BenchmarkFleetRollout runs 1,000 agents in this process (the real
// reconcile code, each with its own state folder, device id and
// configuration; ten labelled ring: canary) polling one release tag of
// Debian's docker-registry every 20s with the default jitter of 10 %. It
// pushes a signed release with a plan (canary at once, 10 % after 60s,
// all after 120s) and reports:
//
//   - steady-req/s and steady-req/device/interval: the registry's request
//     rate while nothing changes (target: at most 1 request per device per
//     interval);
//   - rollout-req/s: the rate from the push until the last wave has been
//     open for one more interval (statement look-ups included);
//   - converge-<wave>-s: the time from a wave's opening until its last
//     device adopted (target: within interval + jitter); a wave that opens
//     before the release is in the registry (canary: at the created time,
//     the commit's) is timed from the end of the push, reported as
//     push-after-created-s;
//   - peak-req/s-per-mean: the busiest second of steady state over the
//     mean (1 means polls are evenly spread; jitter keeps it low);
//   - payload-downloads-first-interval: the downloads of the release's
//     payload in the canaries' interval (from the push, one interval and
//     its jitter): the canaries', once the devices of later waves spread
//     theirs over the time before their waves open;
//   - payload-downloads-peak/s: the busiest second of those downloads;
//   - heap-KiB/device: the Go heap in use per simulated device.
//
// Run it with:
//
//	go test -run='^$' -bench=FleetRollout -benchtime=1x -timeout 30m ./test/bench/
func BenchmarkFleetRollout(b *testing.B) {
	n := 1000
	if v := os.Getenv(fleetEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 20 {
			b.Fatalf("%s=%q: want a number of devices, at least 20", fleetEnv, v)
		}
	}
	const (
		interval = 20 * time.Second
		earlyAt  = 60 * time.Second
		allAt    = 120 * time.Second
	)
	f := testenv.StartFleet(b)
	reg := f.Registry
	push := func(created time.Time, plan string) string {
		b.Helper()
		return f.Push("stable", created, plan)
	}
	d0 := push(time.Now().Add(-time.Hour).Truncate(time.Second), "")

	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	type device struct {
		id, state, wave string
		adopted         time.Time
	}
	devs := make([]*device, n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	done := make(chan struct{}, n)
	for i := range devs {
		d := &device{id: fmt.Sprintf("d%04d", i), wave: "all"}
		var labels map[string]string
		if i%(n/10) == 0 && i/(n/10) < 10 {
			labels, d.wave = map[string]string{"ring": "canary"}, "canary"
		} else if testenv.FleetBucket(testenv.FleetRepository, d.id) < 1000 {
			d.wave = "early"
		}
		path, state := f.AgentConfig(filepath.Join(f.Dir, d.id), testenv.FleetAgent{ID: d.id, Labels: labels, Interval: interval, Timeout: 60 * time.Second})
		d.state = state
		cfg, err := config.Load(path)
		if err != nil {
			b.Fatal(err)
		}
		// No memory trims: the simulated devices share one heap and one
		// program, and a trim of them after each device's apply would cost
		// the whole process what it costs a device alone.
		a, err := reconcile.New(cfg, reconcile.Options{Appliers: []reconcile.Applier{nopApplier{}}, Log: discard, Version: "bench", Trim: func() {}})
		if err != nil {
			b.Fatal(err)
		}
		devs[i] = d
		go func() {
			defer func() { done <- struct{}{} }()
			_ = a.Run(ctx, nil)
		}()
		// the agents start over one interval, as a fleet's would
		time.Sleep(interval / time.Duration(n))
	}
	current := func(d *device) string { return testenv.FleetCurrent(d.state) }
	on := func(digest string) int {
		c := 0
		for _, d := range devs {
			if current(d) == digest {
				c++
			}
		}
		return c
	}
	testenv.Eventually(b, 10*time.Minute, func() bool { return on(d0) == n }, "the fleet never converged on the first release")

	// Steady state: three intervals with nothing new.
	time.Sleep(interval)
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	before := len(reg.Requests())
	start := time.Now()
	time.Sleep(3 * interval)
	reqs := reg.Requests()[before:]
	steadyDur := time.Since(start)
	steadyRate := float64(len(reqs)) / steadyDur.Seconds()
	perSecond := map[int64]int{}
	for _, r := range reqs {
		perSecond[r.Time.Unix()]++
	}
	peak := 0
	for _, c := range perSecond {
		peak = max(peak, c)
	}

	// The rollout.
	created := time.Now().Truncate(time.Second)
	before = len(reg.Requests())
	d1 := push(created, fmt.Sprintf(`rollout:
  waves:
    - {name: canary, selector: {ring: canary}}
    - {name: early, percent: 10, after: %s}
    - {name: all, percent: 100, after: %s}
`, earlyAt, allAt))
	pushed := time.Now()
	layers := f.Layers(d1)
	opens := map[string]time.Time{"canary": created, "early": created.Add(earlyAt), "all": created.Add(allAt)}
	early := 0
	deadline := opens["all"].Add(5 * interval)
	mark := func() {
		now := time.Now()
		for _, d := range devs {
			if d.adopted.IsZero() && current(d) == d1 {
				d.adopted = now
				if now.Before(opens[d.wave]) {
					b.Errorf("%s (wave %s) adopted before its wave opened", d.id, d.wave)
				}
			}
		}
	}
	for on(d1) < n && time.Now().Before(deadline) {
		mark()
		time.Sleep(200 * time.Millisecond)
	}
	mark() // those that adopted since the last pass, which ended the loop
	adopted := on(d1)
	if adopted != n {
		// reported, with the figures: an overloaded registry is a finding
		b.Errorf("%d of %d devices adopted the release %s after its last wave opened", adopted, n, deadline.Sub(opens["all"]))
	}
	time.Sleep(time.Until(opens["all"].Add(interval + interval/10)))
	all := reg.Requests()
	rolloutReqs := len(all) - before
	rolloutDur := time.Since(created)
	// The payload's downloads: in the canaries' interval (from the push,
	// one interval and its jitter), and the busiest second of the rollout.
	firstInterval, downloads := 0, map[int64]int{}
	for _, r := range all[before:] {
		path, _, _ := strings.Cut(r.URI, "?")
		if r.Method != http.MethodGet || !slices.Contains(layers, path) {
			continue
		}
		downloads[r.Time.Unix()]++
		if r.Time.Before(pushed.Add(interval + interval/10)) {
			firstInterval++
		}
	}
	peakDownloads := 0
	for _, c := range downloads {
		peakDownloads = max(peakDownloads, c)
	}
	for _, w := range []string{"canary", "early", "all"} {
		var last time.Duration
		in, took := 0, 0
		for _, d := range devs {
			if d.wave == w {
				in++
				if !d.adopted.IsZero() {
					took++
					last = max(last, d.adopted.Sub(later(opens[w], pushed)))
				}
				if w == "early" {
					early++
				}
			}
		}
		b.ReportMetric(last.Seconds(), "converge-"+w+"-s")
		b.Logf("wave %s: %d of %d devices adopted, the last %s after it opened", w, took, in, last.Round(time.Millisecond))
	}
	cancel()
	for range n {
		<-done
	}

	b.ReportMetric(steadyRate, "steady-req/s")
	b.ReportMetric(steadyRate*interval.Seconds()/float64(n), "steady-req/device/interval")
	b.ReportMetric(float64(peak)/math.Max(steadyRate, 1e-9), "peak-req/s-per-mean")
	b.ReportMetric(float64(rolloutReqs)/rolloutDur.Seconds(), "rollout-req/s")
	b.ReportMetric(pushed.Sub(created).Seconds(), "push-after-created-s")
	b.ReportMetric(float64(firstInterval), "payload-downloads-first-interval")
	b.ReportMetric(float64(peakDownloads), "payload-downloads-peak/s")
	b.ReportMetric(float64(adopted)/float64(n), "adopted-fraction")
	b.ReportMetric(float64(m1.HeapInuse-m0.HeapInuse)/float64(n)/1024, "heap-KiB/device")
	b.Logf("%d devices (%d early), interval %s: steady %d requests in %s (%.1f/s, %.2f per device per interval, busiest second %d); rollout %d requests in %s (%.1f/s), the push took %s; payload downloads: %d in the canaries' interval, at most %d in a second; heap %.0f KiB per device",
		n, early, interval, len(reqs), steadyDur.Round(time.Millisecond), steadyRate, steadyRate*interval.Seconds()/float64(n), peak,
		rolloutReqs, rolloutDur.Round(time.Millisecond), float64(rolloutReqs)/rolloutDur.Seconds(), pushed.Sub(created).Round(time.Millisecond), firstInterval, peakDownloads,
		float64(m1.HeapInuse-m0.HeapInuse)/float64(n)/1024)
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
