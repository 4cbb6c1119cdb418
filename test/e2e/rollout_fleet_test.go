package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

// fleetSizeEnv overrides the number of agents of TestRolloutFleet.
const fleetSizeEnv = "BERTH_E2E_FLEET"

// TestRolloutFleet runs a fleet of real agent processes (200 by default,
// device ids d000…d199, four labelled ring: canary) against the real
// registry, every one polling fleet/line-3:stable every few seconds. A
// release with a plan of seconds (canary at once, 10 % after 40s, all after
// 80s) reaches the canaries first, then exactly the devices whose hash
// bucket is under 1000 (computed here from the documented formula), then
// everyone; no device adopts before its wave opens. The registry's access
// log counts the requests: statements are looked up during the rollout
// and not after it, and in steady state an unchanged poll is one request.
func TestRolloutFleet(t *testing.T) {
	n := 200
	if v := os.Getenv(fleetSizeEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 20 {
			t.Fatalf("%s=%q: want a number of agents, at least 20", fleetSizeEnv, v)
		}
	}
	const (
		interval = 3 * time.Second
		earlyAt  = 40 * time.Second
		allAt    = 80 * time.Second
	)
	f := testenv.StartFleet(t)
	d0 := f.Push("stable", time.Now().Add(-time.Hour).Truncate(time.Second), "")

	type dev struct {
		id, state, cfg string
		canary         bool
		wave           string
		adopted        time.Time
	}
	devs := make([]*dev, n)
	procs := make([]*testenv.Process, n)
	for i := range devs {
		d := &dev{id: fmt.Sprintf("d%03d", i), canary: i%50 == 0}
		var labels map[string]string
		if d.canary {
			labels = map[string]string{"ring": "canary"}
		}
		d.cfg, d.state = f.AgentConfig(filepath.Join(f.Dir, d.id), testenv.FleetAgent{
			ID: d.id, Labels: labels, Interval: interval, Timeout: 20 * time.Second, Jitter: "0", LogLevel: "warn",
		})
		if i == 0 {
			f.OK("agent", "--config", d.cfg, "--check-config")
		}
		devs[i] = d
		procs[i] = f.StartAgent(d.cfg)
	}
	current := func(d *dev) string { return testenv.FleetCurrent(d.state) }
	on := func(digest string) int {
		c := 0
		for _, d := range devs {
			if current(d) == digest {
				c++
			}
		}
		return c
	}
	exited := func() {
		t.Helper()
		for i, p := range procs {
			select {
			case <-p.Done():
				t.Fatalf("agent %s exited: %s", devs[i].id, p.Stderr())
			default:
			}
		}
	}
	testenv.Eventually(t, 3*time.Minute, func() bool { exited(); return on(d0) == n }, "the fleet never converged on the release without a plan; an agent's stderr:\n%s", procs[0].Stderr())

	// The expected waves, from the documented formula: the canaries by
	// label, then the devices whose bucket is under 10 % of 10000.
	early := 0
	for _, d := range devs {
		switch {
		case d.canary:
			d.wave = "canary"
		case bucket(testenv.FleetRepository, d.id) < 1000:
			d.wave, early = "early", early+1
		default:
			d.wave = "all"
		}
	}
	if early == 0 || early == n-n/50 {
		t.Fatalf("%d devices in the early wave: the test proves nothing", early)
	}

	// Steady state before the release: one request per poll.
	steady := func(what string) {
		t.Helper()
		before := f.Registry.RequestCount("")
		start := time.Now()
		time.Sleep(5 * interval)
		got := f.Registry.RequestCount("") - before
		polls := float64(n) * time.Since(start).Seconds() / interval.Seconds()
		statements := 0
		for _, r := range f.Registry.Requests()[before:] {
			if strings.Contains(r.URI, "sha256-") || strings.Contains(r.URI, "/referrers/") {
				statements++
			}
		}
		t.Logf("%s: %d requests in %s for about %.0f polls of %d agents", what, got, time.Since(start).Round(time.Millisecond), polls, n)
		if float64(got) > polls*1.1+float64(n) || statements != 0 {
			t.Errorf("%s: %d requests (%d statement look-ups) for about %.0f unchanged polls: want one each", what, got, statements, polls)
		}
		if float64(got) < polls*0.5 {
			t.Errorf("%s: %d requests for about %.0f polls: the agents do not poll", what, got, polls)
		}
	}
	steady("before the rollout")

	created := time.Now().Truncate(time.Second)
	plan := fmt.Sprintf(`rollout:
  waves:
    - {name: canary, selector: {ring: canary}}
    - {name: early, percent: 10, after: %s}
    - {name: all, percent: 100, after: %s}
`, earlyAt, allAt)
	before := f.Registry.RequestCount("")
	d1 := f.Push("stable", created, plan)
	opens := map[string]time.Time{"canary": created, "early": created.Add(earlyAt), "all": created.Add(allAt)}

	// exactly fails unless the devices in the open waves, and only they,
	// have adopted.
	exactly := func(open func(*dev) bool, what string) {
		t.Helper()
		var missing, extra []string
		for _, d := range devs {
			switch taken := !d.adopted.IsZero(); {
			case open(d) && !taken:
				missing = append(missing, d.id)
			case !open(d) && taken:
				extra = append(extra, d.id)
			}
		}
		if len(missing) > 0 || len(extra) > 0 {
			var why strings.Builder
			for _, id := range append(missing, extra...) {
				out, _, _ := f.Berth("status", "--config", filepath.Join(f.Dir, id, "agent.yaml"))
				fmt.Fprintf(&why, "\n%s:\n%s", id, out)
			}
			t.Errorf("%s: not adopted %v, adopted too early %v%s", what, missing, extra, why.String())
		}
	}
	// Watch every device until all adopted: none before its wave opens.
	deadline := created.Add(allAt + 10*interval)
	checked := map[string]bool{}
	for on(d1) < n && time.Now().Before(deadline) {
		now := time.Now()
		for _, d := range devs {
			if d.adopted.IsZero() && current(d) == d1 {
				d.adopted = now
				if now.Before(opens[d.wave]) {
					t.Errorf("%s (wave %s) adopted at %s, before its wave opens at %s", d.id, d.wave, now.Format(time.RFC3339Nano), opens[d.wave].Format(time.RFC3339))
				}
			}
		}
		// Just before a wave opens, exactly the waves before it have
		// adopted.
		for _, c := range []struct {
			next string
			open func(*dev) bool
		}{
			{"early", func(d *dev) bool { return d.canary }},
			{"all", func(d *dev) bool { return d.wave != "all" }},
		} {
			if at := opens[c.next].Add(-1500 * time.Millisecond); !checked[c.next] && !now.Before(at) && now.Before(at.Add(time.Second)) {
				checked[c.next] = true
				exactly(c.open, "just before wave "+c.next+" opens")
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	if got := on(d1); got != n {
		t.Fatalf("%d of %d devices on the release %s after its last wave opened", got, n, deadline.Sub(opens["all"]))
	}
	if !checked["early"] || !checked["all"] {
		t.Fatalf("the adoptions before the waves opened were not checked (%v): the test proves nothing", checked)
	}
	for _, w := range []string{"canary", "early", "all"} {
		var last time.Duration
		c := 0
		for _, d := range devs {
			if d.wave == w {
				c++
				last = max(last, d.adopted.Sub(opens[w]))
			}
		}
		t.Logf("wave %s: %d devices, the last adopted %s after it opened", w, c, last.Round(time.Millisecond))
	}
	statements := 0
	for _, r := range f.Registry.Requests()[before:] {
		if strings.Contains(r.URI, "sha256-") || strings.Contains(r.URI, "/referrers/") {
			statements++
		}
	}
	if statements < n {
		t.Errorf("%d statement look-ups during the rollout, want at least one per device", statements)
	}

	// After the rollout (its last wave open one more interval): one request
	// per poll again, no statement look-ups.
	time.Sleep(time.Until(opens["all"].Add(2 * interval)))
	steady("after the rollout")
}
