package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

// steerPlan: the canaries at once, the devices labelled ring: rest after
// restAfter, and a last wave (nobody here) an hour later, which keeps the
// release in its rollout, so that the agents read its statements, for
// the whole test.
const steerPlan = `rollout:
  waves:
    - {name: canary, selector: {ring: canary}}
    - {name: rest, selector: {ring: rest}, after: %s}
    - {name: all, percent: 100, after: 1h}
`

// steerHelmApp is the app v2 adds: a Helm chart in the release.
const steerHelmApp = `  - name: db
    helm: {path: charts/db}
`

// steerStatus is what berth status --output json says of the source.
type steerStatus struct {
	Sources []steerSource
}

// steerSource is the status of the agent's one source.
type steerSource struct {
	Name    string
	Applied *struct{ Digest, Outcome string }
	Last    *struct{ Digest, Outcome, Error, Message string }
	Waiting *struct{ Digest, Reason, Message string }
	History []struct{ Digest, Outcome, Error string }
	Release []steerRelease `json:"releases"`
}

// steerRelease is what an agent records of a release with a plan.
type steerRelease struct {
	Digest, Wave, Verdict, Action string
	Ignored                       int
	IgnoredReason                 string
	LookedUp                      time.Time
}

// steerDevice is one agent of TestRolloutSteer.
type steerDevice struct {
	id, cfg, state string
	proc           *testenv.Process
	v1Tree         string // the hash of its current tree on v1
}

// steerFleet is the fleet of TestRolloutSteer: c00-c02 labelled ring:
// canary (c01 and c02 with a Helm applier whose cluster is down), r03-r07
// labelled ring: rest, all reporting to p.
type steerFleet struct {
	*testenv.Fleet
	t        *testing.T
	p        *testenv.Prometheus
	interval time.Duration
	devs     []*steerDevice
	// healthy are the devices that take v2 (c00, r03-r07), failing the
	// canaries whose v2 apply fails, rest r03-r07.
	healthy, failing, rest []*steerDevice
}

// TestRolloutSteer steers a rollout of real agent processes (8 berth
// agents on the real registry, verifying with a cosign key, reporting to
// Debian's Prometheus by remote-write) with the circuit breaker and signed
// statements:
//
//   - v1, without a plan, reaches every agent;
//   - v2 adds a Helm app and a plan (canaries c00-c02 at once, r03-r07
//     after 40s). The canaries c01 and c02 run a Helm applier whose
//     cluster is down: the real applier fails v2 there and the agent goes
//     back to v1; c00 and the others have no Helm applier (the app is
//     skipped) and take v2 fine. berth rollout watch --max-failed 50%
//     --min-devices 3 trips on 2 failures of 3: it exits 2, names c01 and
//     c02, and its signed pause is in the registry;
//   - when wave rest opens, its agents stay on v1 and say paused (berth
//     status of each agent, and berth_rollout_waiting{reason="paused"} in
//     Prometheus); c00, on v2, keeps it;
//   - a resume signed with a key the agents do not trust is read, ignored
//     and reported (berth status, the agent's log), and changes nothing;
//   - a signed resume: the rest agents adopt v2;
//   - a signed abort: every agent on v2 (c00, r03-r07) goes back to v1,
//     byte for byte the tree it ran before, and none takes v2 again; the
//     failing canaries stay on v1;
//   - the next release, v3, reaches every agent.
func TestRolloutSteer(t *testing.T) {
	const restAfter = 40 * time.Second
	s := startSteerFleet(t, 2*time.Second)
	d1 := s.Push("stable", time.Now().Add(-time.Hour).Truncate(time.Second), "")
	for _, d := range s.devs {
		d.proc = s.StartAgent(d.cfg)
	}
	s.all(s.devs, d1, "v1")
	for _, d := range s.devs {
		d.v1Tree = treeHash(t, filepath.Join(d.state, "sources", testenv.FleetSource, "current"))
	}
	// Every device reports before the watch counts them.
	testenv.Eventually(t, 60*time.Second, func() bool {
		return len(s.p.Vector(fmt.Sprintf(`berth_source_applied_info{source="line-3",digest=%q}`, d1))) == len(s.devs)
	}, "the devices never reported v1 to Prometheus")

	// v2: a Helm app, and the plan; the breaker trips on the canaries.
	writeChart(t, filepath.Join(s.Repo, "charts", "db"))
	created := time.Now().Truncate(time.Second)
	d2 := s.Push("stable", created, steerHelmApp+fmt.Sprintf(steerPlan, restAfter))
	restOpens := created.Add(restAfter)
	s.breaker(created, restOpens, d1, d2)

	// Wave rest opens: without the pause its agents would adopt v2.
	time.Sleep(time.Until(restOpens.Add(3 * s.interval)))
	s.paused(d1, d2, "after wave rest opened")
	testenv.Eventually(t, 30*time.Second, func() bool {
		return slices.Equal(promDevices(s.p, fmt.Sprintf(`berth_rollout_waiting{reason="paused",digest=%q,ring="rest"}`, d2)), ids(s.rest))
	}, "berth_rollout_waiting{reason=\"paused\"} never named the rest devices: %v", promDevices(s.p, `berth_rollout_waiting{reason="paused"}`))

	s.untrusted(d2)
	s.paused(d1, d2, "after an untrusted resume")

	// The signed resume: the rest adopt v2 (their wave is open); the
	// failing canaries still fail it and stay on v1.
	s.OK("rollout", "resume", s.URL("stable"), "--sign-key", s.Key, "--reason", "canary failures are the canaries' cluster")
	s.all(s.healthy, d2, "after resume")
	for _, d := range s.failing {
		if cur := testenv.FleetCurrent(d.state); cur != d1 {
			t.Errorf("%s after resume: on %s, want v1 (its v2 apply fails)", d.id, cur)
		}
	}

	s.abort(d1, d2)

	// The next release, without the Helm app, proceeds normally.
	d3 := s.Push("stable", time.Now().Truncate(time.Second), "")
	s.all(s.devs, d3, "v3 after the abort")
}

// startSteerFleet writes the fleet's agent configurations.
func startSteerFleet(t *testing.T, interval time.Duration) *steerFleet {
	s := &steerFleet{Fleet: testenv.StartFleet(t), t: t, p: testenv.StartPrometheus(t, testenv.PrometheusOptions{}), interval: interval}
	// A kubeconfig whose API server is down, as on a device whose k3s
	// does not start.
	kubeconfig := filepath.Join(s.Dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters: [{name: k3s, cluster: {server: "https://%s"}}]
users: [{name: berth, user: {token: t0ken}}]
contexts: [{name: k3s, context: {cluster: k3s, user: berth}}]
current-context: k3s
`, closedAddr(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		d := &steerDevice{id: fmt.Sprintf("c%02d", i)}
		labels := map[string]string{"ring": "canary", "site": "berlin"}
		extra := fmt.Sprintf("report:\n  prometheus: {remoteWrite: %s, interval: 1s, insecure: true}\n", s.p.WriteURL())
		switch {
		case i >= 3:
			d.id, labels["ring"] = fmt.Sprintf("r%02d", i), "rest"
			s.rest = append(s.rest, d)
		case i > 0:
			extra += fmt.Sprintf("apply:\n  helm: {kubeconfig: %s}\n", kubeconfig)
			s.failing = append(s.failing, d)
		}
		if i == 0 || i >= 3 {
			s.healthy = append(s.healthy, d)
		}
		d.cfg, d.state = s.AgentConfig(filepath.Join(s.Dir, d.id), testenv.FleetAgent{
			ID: d.id, Labels: labels, Interval: interval, Jitter: "0", LogLevel: "info", Extra: extra,
		})
		s.devs = append(s.devs, d)
	}
	s.OK("agent", "--config", s.failing[0].cfg, "--check-config")
	return s
}

// breaker runs berth rollout watch on v2 (d2) until it trips, before wave
// rest opens, and checks what it says and signs, and that the failing
// canaries tried v2 and went back to v1 (d1).
func (s *steerFleet) breaker(created, restOpens time.Time, d1, d2 string) {
	t := s.t
	t.Helper()
	watch := testenv.StartProcess(t, testenv.RunOptions{Env: s.Env()}, s.Bin, "rollout", "watch", s.URL("stable"),
		"--prometheus", s.p.URL(), "--source", testenv.FleetSource, "--key", s.Pub,
		"--max-failed", "50%", "--min-devices", "3", "--sign-key", s.Key, "--poll", "500ms", "--max-wait", "3m")
	select {
	case <-watch.Done():
	case <-time.After(time.Until(restOpens) + time.Minute):
		t.Fatalf("rollout watch never tripped:\n%s%s", lastLines(watch.Stderr(), 10), s.dump(s.devs))
	}
	if code := watch.ExitCode(); code != 2 {
		t.Fatalf("rollout watch: exit %d, want 2 (the breaker tripped)\nstdout: %s\nstderr: %s%s", code, watch.Stdout(), watch.Stderr(), s.dump(s.devs))
	}
	tripped := time.Now()
	t.Logf("the breaker tripped %s after the push", tripped.Sub(created).Round(time.Millisecond))
	if tripped.After(restOpens) {
		t.Fatalf("the breaker tripped at %s, after wave rest opened (%s): the machine is too slow for this test's plan", tripped.Format(time.RFC3339), restOpens.Format(time.RFC3339))
	}
	want := "wave canary: 2 of 3 devices that tried the release failed (3 in the wave): c01, c02"
	if out := watch.Stdout(); !strings.Contains(out, "breaker tripped: "+want) || !strings.Contains(out, "pause statement signed at") {
		t.Errorf("watch stdout does not say it tripped on c01 and c02:\n%s", out)
	}
	if errOut := watch.Stderr(); !strings.Contains(errOut, "c01, c02") {
		t.Errorf("watch stderr does not name the failing devices:\n%s", errOut)
	}
	for _, d := range s.failing {
		st := s.state(d)
		if st.Applied == nil || st.Applied.Digest != d1 || testenv.FleetCurrent(d.state) != d1 || s.record(d, d2) == nil ||
			!slices.ContainsFunc(st.History, func(r struct{ Digest, Outcome, Error string }) bool {
				return r.Digest == d2 && r.Outcome == "failed" && strings.Contains(r.Error, "helm")
			}) {
			t.Errorf("%s after failing v2: %s", d.id, steerJSON(st))
		}
	}
	// The pause is in the registry, signed with the trusted key.
	var po planOut
	if err := json.Unmarshal([]byte(s.OK("rollout", "plan", s.URL("stable"), "--key", s.Pub, "--output", "json")), &po); err != nil {
		t.Fatal(err)
	}
	if po.Digest != d2 || po.Statements == nil || po.Statements.Latest == nil || po.Statements.Latest.Action != "pause" ||
		!strings.Contains(po.Statements.Latest.Reason, want) {
		t.Fatalf("the statements of v2 after the breaker: %+v", po.Statements)
	}
}

// paused checks that the rest devices are on v1 (d1) and hold v2 (d2)
// paused, and that c00 stays on v2.
func (s *steerFleet) paused(d1, d2, when string) {
	t := s.t
	t.Helper()
	s.alive()
	for _, d := range s.rest {
		st := s.state(d)
		if cur := testenv.FleetCurrent(d.state); cur != d1 || st.Applied == nil || st.Applied.Digest != d1 ||
			st.Waiting == nil || st.Waiting.Digest != d2 || st.Waiting.Reason != "paused" {
			t.Errorf("%s %s: on %s, want v1 %s, waiting paused on v2:\n%s", d.id, when, cur, d1, steerJSON(st))
		}
	}
	if cur := testenv.FleetCurrent(s.devs[0].state); cur != d2 {
		t.Errorf("c00 %s: on %s, want v2 %s (a pause keeps devices on the release)", when, cur, d2)
	}
}

// untrusted attaches a resume signed by a key the agents do not trust to
// v2 (d2): the rest devices read it, ignore it and report it.
func (s *steerFleet) untrusted(d2 string) {
	t := s.t
	t.Helper()
	time.Sleep(1100 * time.Millisecond) // statements are signed to the second
	s.OK("rollout", "resume", s.URL("stable"), "--sign-key", steerKey(t, s.Fleet, "stranger"), "--reason", "not ours")
	at := time.Now()
	testenv.Eventually(t, 30*time.Second, func() bool {
		for _, d := range s.rest {
			if r := s.record(d, d2); r == nil || r.LookedUp.Before(at.Add(s.interval)) || r.Ignored != 1 {
				return false
			}
		}
		return true
	}, "the agents never read the untrusted resume")
	for _, d := range s.rest {
		r := s.record(d, d2)
		if r.Action != "pause" || r.Verdict != "paused" || !strings.Contains(r.IgnoredReason, "not signed by a trusted signer") {
			t.Errorf("%s after an untrusted resume: %+v", d.id, *r)
		}
		if !strings.Contains(d.proc.Stderr(), "rollout statement ignored") {
			t.Errorf("%s did not log the ignored statement:\n%s", d.id, lastLines(d.proc.Stderr(), 10))
		}
	}
}

// abort signs an abort of v2 (d2): every device on it goes back to v1
// (d1), the same bytes, and stays there; the others stay on v1.
func (s *steerFleet) abort(d1, d2 string) {
	t := s.t
	t.Helper()
	time.Sleep(1100 * time.Millisecond)
	s.OK("rollout", "abort", s.URL("stable"), "--sign-key", s.Key, "--reason", "v2 hurts")
	s.all(s.devs, d1, "after abort")
	time.Sleep(3 * s.interval) // and it stays so: no agent takes v2 again
	for _, d := range s.devs {
		st := s.state(d)
		if cur := testenv.FleetCurrent(d.state); cur != d1 || st.Applied == nil || st.Applied.Digest != d1 {
			t.Errorf("%s after the abort: on %s:\n%s", d.id, cur, steerJSON(st))
		}
		if got := treeHash(t, filepath.Join(d.state, "sources", testenv.FleetSource, "current")); got != d.v1Tree {
			t.Errorf("%s after the abort: the tree it runs (%s) is not the one it ran on v1 (%s)", d.id, got, d.v1Tree)
		}
	}
	for _, d := range s.healthy {
		if st := s.state(d); st.Applied == nil || st.Applied.Outcome != "rolled-back" {
			t.Errorf("%s went back from v2 with %+v, want outcome rolled-back", d.id, st.Applied)
		}
		if r := s.record(d, d2); r == nil || r.Action != "abort" {
			t.Errorf("%s after the abort: release record %+v", d.id, r)
		}
	}
}

// alive fails the test when an agent exited.
func (s *steerFleet) alive() {
	s.t.Helper()
	for _, d := range s.devs {
		select {
		case <-d.proc.Done():
			s.t.Fatalf("agent %s exited: %s", d.id, d.proc.Stderr())
		default:
		}
	}
}

// all waits until every device of ds is on digest.
func (s *steerFleet) all(ds []*steerDevice, digest, what string) {
	s.t.Helper()
	on := func() bool {
		s.alive()
		for _, d := range ds {
			if testenv.FleetCurrent(d.state) != digest {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(90 * time.Second); !on(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: not every device reached %s:%s", what, digest, s.dump(ds))
		}
	}
}

// state is what berth status says of the device's source.
func (s *steerFleet) state(d *steerDevice) steerSource {
	s.t.Helper()
	out, errOut, code := s.Berth("status", "--config", d.cfg, "--output", "json")
	var st steerStatus
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Sources) != 1 {
		s.t.Fatalf("%s: berth status: exit %d\n%s\n%s", d.id, code, out, errOut)
	}
	return st.Sources[0]
}

// record is the device's record of the release digest; nil when none.
func (s *steerFleet) record(d *steerDevice, digest string) *steerRelease {
	s.t.Helper()
	st := s.state(d)
	for i, r := range st.Release {
		if r.Digest == digest {
			return &st.Release[i]
		}
	}
	return nil
}

// dump is each device's status and log, for failures.
func (s *steerFleet) dump(ds []*steerDevice) string {
	var b strings.Builder
	for _, d := range ds {
		out, _, _ := s.Berth("status", "--config", d.cfg)
		fmt.Fprintf(&b, "\n%s (on %s):\n%s\nlog:\n%s", d.id, testenv.FleetCurrent(d.state), out, lastLines(d.proc.Stderr(), 8))
	}
	return b.String()
}

// steerKey writes another cosign key pair and returns its private key.
func steerKey(t *testing.T, f *testenv.Fleet, name string) string {
	t.Helper()
	prefix := filepath.Join(f.Dir, name)
	f.OK("generate-key", "--prefix", prefix)
	return prefix + ".key"
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// writeChart writes a minimal Helm chart (one ConfigMap) into dir.
func writeChart(t *testing.T, dir string) {
	t.Helper()
	for name, content := range map[string]string{
		"Chart.yaml":               "apiVersion: v2\nname: db\nversion: 0.1.0\n",
		"templates/configmap.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: db}\ndata: {k: v}\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func steerJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// promDevices is the sorted device label of what query returns.
func promDevices(p *testenv.Prometheus, query string) []string {
	var out []string
	for _, s := range p.Vector(query) {
		out = append(out, string(s.Metric["device"]))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func ids(ds []*steerDevice) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.id)
	}
	slices.Sort(out)
	return out
}

// treeHash hashes the names, modes and contents of the files under dir
// (following dir itself when it is a link).
func treeHash(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		info, err := e.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v\n", rel, info.Mode())
		if e.Type().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%d %x\n", len(b), sha256.Sum256(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
