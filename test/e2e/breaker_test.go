package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/berth-dev/berth/internal/fleetsim"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/policy/rollout"
	"github.com/berth-dev/berth/policy/rollout/statement"
	"github.com/berth-dev/berth/reconcile/metrics"
	"github.com/berth-dev/berth/state"
)

// breakerPlan: a canary wave by label, then everyone an hour later.
const breakerPlan = `rollout:
  waves:
    - name: canary
      selector: {ring: canary}
    - name: all
      percent: 100
      after: 1h
`

// statusOut is what berth rollout status --output json prints.
type statusOut struct {
	URL    string
	Digest string
	Waves  []struct {
		Name      string
		Open      bool
		Devices   int
		OnRelease int
		Healthy   int
		Failed    []string
		Waiting   map[string]int
		Unseen    []string
		Pending   int
	}
	Devices []struct{ ID, Wave, State string }
}

// TestRolloutWatchPausesBadRelease is the circuit breaker end to end, on
// the real registry and Debian's Prometheus: a release with a canary wave
// is pushed and signed; simulated devices (the agent's real metrics and
// remote-write reporter, internal/fleetsim) decide with the real rollout
// policy and report; two of five canaries fail the release (as a
// device-local env file would make its health check fail). berth rollout
// watch --max-failed 30% tolerates the first failure (1 of 4) and trips on
// the second (2 of 5): it signs and pushes a pause statement, exits 2 and
// names both devices. The statement verifies with the trusted key (and not
// with another), and the devices of the later wave, deciding with it, do
// not adopt the release; berth rollout status counts exactly what the
// simulation did.
//
// The later devices here run the agent's decision code, rollout.Decide, on
// the statements read from the registry, not the agent binary;
// TestRolloutSteer (rollout_steer_test.go) trips the breaker on real agent
// processes and proves that they honour the pause.
func TestRolloutWatchPausesBadRelease(t *testing.T) {
	e := newEnv(t)
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{})
	e.pushImage("acme/hello:1.0.0")
	repo := e.fleet(e.reg.Host() + "/acme/hello:1.0.0")
	stateFile := filepath.Join(repo, "berth.yaml")
	base, err := os.ReadFile(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	var old, rel pushResult
	e.okJSON(&old, "push", repo, e.url("fleet/line-3:1.4.0"), "--sign-key", e.key)
	if err := os.WriteFile(stateFile, append(append([]byte{}, base...), breakerPlan...), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.GitCommitAll(t, repo, testenv.GitOptions{Message: "1.5.0 with a rollout plan", Time: time.Now().UTC().Truncate(time.Second)})
	e.okJSON(&rel, "push", repo, e.url("fleet/line-3:1.5.0"), "--sign-key", e.key)
	created, err := time.Parse(time.RFC3339, rel.Created)
	if err != nil {
		t.Fatal(err)
	}
	f := newBreakerFleet(t, p, created, rel.Digest)
	canaries, others := f.devices[:5], f.devices[5:]
	for _, d := range f.devices {
		d.Apply("line-3", old.Digest, "1.4.0", time.Now())
	}
	f.push(f.devices...)
	adopt, plan := f.adopt, f.plan

	// The watch, as a CI step after berth push.
	promArgs := []string{"--prometheus", p.URL(), "--source", "line-3", "--selector", `site="berlin"`, "--key", e.pub}
	watch := testenv.StartProcess(t, testenv.RunOptions{Env: []string{"DOCKER_CONFIG=" + e.reg.DockerConfigDir, "COSIGN_PASSWORD=" + password}},
		e.bin, append([]string{"rollout", "watch", e.url("fleet/line-3:1.5.0"), "--max-failed", "30%", "--min-devices", "3",
			"--sign-key", e.key, "--poll", "500ms", "--max-wait", "2m", "--ca-file", e.reg.CAFile}, promArgs...)...)
	polled := func(substr string) {
		t.Helper()
		testenv.Eventually(t, 30*time.Second, func() bool { return strings.Contains(watch.Stderr(), substr) }, "watch never reported %q:\n%s", substr, watch.Stderr())
	}
	polled("canary: 0/5 healthy, 0 failed, 0 waiting, 5 pending")
	for _, d := range others {
		if v := adopt(d, rollout.None, time.Now()); v != rollout.WaitWave {
			t.Fatalf("%s, in wave all: %s", d.ID, v)
		}
	}
	// Three healthy canaries and a failed one: 1 of 4 is under 30 %.
	for _, d := range []*fleetsim.Device{canaries[0], canaries[2], canaries[3], canaries[1]} {
		if v := adopt(d, rollout.None, time.Now()); v != rollout.Adopt {
			t.Fatalf("%s: %s", d.ID, v)
		}
	}
	polled("canary: 3/5 healthy, 1 failed")
	select {
	case <-watch.Done():
		t.Fatalf("watch ended at 1 failure of 4 (exit %d):\n%s", watch.ExitCode(), watch.Stderr())
	default:
	}
	// The second failure: 2 of 5 is over 30 %.
	failedAt := time.Now()
	adopt(canaries[4], rollout.None, time.Now())
	if code := watch.Wait(30 * time.Second); code != 2 {
		t.Fatalf("watch: exit %d, want 2\nstdout: %s\nstderr: %s", code, watch.Stdout(), watch.Stderr())
	}
	t.Logf("from the second failure reaching Prometheus to the pause statement in the registry: %s (poll 500ms)", time.Since(failedAt).Round(time.Millisecond))
	out, errOut := watch.Stdout(), watch.Stderr()
	for _, want := range []string{"breaker tripped: wave canary: 2 of 5 devices that tried the release failed (5 in the wave): c01, c04", "pause statement signed at"} {
		if !strings.Contains(out, want) {
			t.Errorf("watch stdout lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errOut, "Error: the rollout of") || !strings.Contains(errOut, "c01, c04") {
		t.Errorf("watch stderr does not name the failing devices:\n%s", errOut)
	}

	// The statement is in the registry, signed by the key CI holds: it
	// verifies with that key, and with no other.
	digest, err := name.NewDigest(e.reg.Host() + "/fleet/line-3@" + rel.Digest)
	if err != nil {
		t.Fatal(err)
	}
	read := func(pub string) *statement.Result {
		t.Helper()
		keys, err := cosign.LoadPublicKeys(pub)
		if err != nil {
			t.Fatal(err)
		}
		res, err := statement.Read(context.Background(), digest, cosign.Policy{Keys: keys}, statement.Options{}, e.remoteOpts()...)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := read(e.pub)
	if l := res.Latest; l == nil || l.Action != rollout.Pause || l.Digest != rel.Digest ||
		!strings.Contains(l.Reason, "wave canary: 2 of 5") || !strings.Contains(l.Reason, "c01, c04") || len(res.Ignored) != 0 {
		t.Fatalf("statements with the trusted key: %+v", res)
	}
	_, stranger := e.keyPair("stranger")
	if other := read(stranger); other.Latest != nil || other.Action() != rollout.None || len(other.Ignored) != 1 {
		t.Fatalf("statements with another key: %+v", other)
	}

	// When wave all opens, its devices would adopt without the statement;
	// with it, they do not.
	opens := created.Add(time.Hour + time.Minute)
	for _, d := range others {
		if v := adopt(d, res.Action(), opens); v != rollout.Paused {
			t.Errorf("%s after the pause: %s", d.ID, v)
		}
		dec, _ := rollout.Decide(rollout.Input{Plan: plan, Created: created, Device: rollout.Device{ID: d.ID, Labels: d.Labels}, Repository: "fleet/line-3", Now: opens})
		if dec.Verdict != rollout.Adopt {
			t.Errorf("%s without the pause: %s (the test proves nothing)", d.ID, dec.Verdict)
		}
	}

	// berth rollout status counts what the simulation did.
	var st statusOut
	e.okJSON(&st, append([]string{"rollout", "status", e.url("fleet/line-3:1.5.0")}, promArgs...)...)
	if st.Digest != rel.Digest || len(st.Waves) != 2 || len(st.Devices) != 8 {
		t.Fatalf("status: %+v", st)
	}
	c, a := st.Waves[0], st.Waves[1]
	if c.Name != "canary" || !c.Open || c.Devices != 5 || c.OnRelease != 3 || c.Healthy != 3 || !slices.Equal(c.Failed, []string{"c01", "c04"}) || c.Pending != 0 {
		t.Errorf("wave canary: %+v", c)
	}
	if a.Name != "all" || a.Open || a.Devices != 3 || a.OnRelease != 0 || a.Healthy != 0 || a.Waiting["paused"] != 3 {
		t.Errorf("wave all: %+v", a)
	}
	text := e.ok(append([]string{"rollout", "status", e.url("fleet/line-3:1.5.0")}, promArgs...)...)
	if !strings.Contains(text, "failed: c01, c04") || !strings.Contains(text, "waiting: paused 3") {
		t.Errorf("status text:\n%s", text)
	}

	// Usage errors say what to do.
	if msg := e.fail(append([]string{"rollout", "watch", e.url("fleet/line-3:1.5.0"), "--max-failed", "5%"}, promArgs...)...); !strings.Contains(msg, "--sign-key") {
		t.Errorf("--max-failed without --sign-key: %q", msg)
	}
	if msg := e.fail(append([]string{"rollout", "watch", e.url("fleet/line-3:1.5.0"), "--max-failed", "150%", "--sign-key", e.key}, promArgs...)...); !strings.Contains(msg, "0% to 100%") {
		t.Errorf("--max-failed 150%%: %q", msg)
	}
}

// breakerFleet is the simulated fleet of TestRolloutWatchPausesBadRelease:
// five canaries (c00-c04, c01 and c04 fail the release) and three others
// (d05-d07), reporting to Prometheus.
type breakerFleet struct {
	t       *testing.T
	plan    *state.Rollout
	created time.Time
	digest  string
	devices []*fleetsim.Device
	bad     map[string]bool
}

func newBreakerFleet(t *testing.T, p *testenv.Prometheus, created time.Time, digest string) *breakerFleet {
	f := &breakerFleet{t: t, created: created, digest: digest, bad: map[string]bool{"c01": true, "c04": true},
		plan: &state.Rollout{Waves: []state.Wave{ // breakerPlan
			{Name: "canary", Selector: map[string]string{"ring": "canary"}},
			{Name: "all", Percent: 100, After: time.Hour},
		}}}
	dir := t.TempDir()
	for i := range 8 {
		id, ls := fmt.Sprintf("c%02d", i), map[string]string{"ring": "canary", "site": "berlin"}
		if i >= 5 {
			id, ls = fmt.Sprintf("d%02d", i), map[string]string{"site": "berlin"}
		}
		d, err := fleetsim.NewDevice(fleetsim.Options{URL: p.WriteURL(), Dir: dir}, id, ls)
		if err != nil {
			t.Fatal(err)
		}
		f.devices = append(f.devices, d)
	}
	return f
}

// push has the devices report now.
func (f *breakerFleet) push(ds ...*fleetsim.Device) {
	f.t.Helper()
	for _, d := range ds {
		d.Tick(context.Background(), time.Now())
		if st := d.Reporter.Status(); st.LastError != "" {
			f.t.Fatalf("%s: report: %s", d.ID, st.LastError)
		}
	}
}

// adopt has a device decide about the release with the rollout policy at
// now, given the statements' action, apply it (or fail it) when the
// verdict says so, and report.
func (f *breakerFleet) adopt(d *fleetsim.Device, action rollout.Action, now time.Time) rollout.Verdict {
	f.t.Helper()
	dec, err := rollout.Decide(rollout.Input{Plan: f.plan, Created: f.created, Device: rollout.Device{ID: d.ID, Labels: d.Labels},
		Repository: "fleet/line-3", Action: action, Now: now})
	if err != nil {
		f.t.Fatal(err)
	}
	d.Metrics.SetWave("line-3", f.digest, dec.Placement.Name)
	switch {
	case dec.Verdict == rollout.Adopt && f.bad[d.ID]:
		d.Fail("line-3", f.digest, metrics.OutcomeFailed)
	case dec.Verdict == rollout.Adopt:
		d.Apply("line-3", f.digest, "1.5.0", now)
	case dec.Verdict == rollout.Paused:
		d.Metrics.SetOutcome("line-3", f.digest, metrics.OutcomeWaiting)
		d.Metrics.SetWaiting("line-3", f.digest, metrics.WaitPaused, time.Time{})
	case dec.Verdict == rollout.WaitWave:
		d.Metrics.SetOutcome("line-3", f.digest, metrics.OutcomeWaiting)
		d.Metrics.SetWaiting("line-3", f.digest, metrics.WaitWave, dec.Opens)
	}
	f.push(d)
	return dec.Verdict
}
