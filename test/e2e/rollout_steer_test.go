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
	History []steerRecord
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
	// fails is what its failed v2 apply says (the applier that failed).
	fails string
}

// steerRecord is one entry of a source's history in berth status.
type steerRecord struct {
	Digest, Outcome, Error string
	Time                   time.Time
}

// steerFleet is the fleet of TestRolloutSteer: c00-c02 labelled ring:
// canary (c01 with a Helm applier whose cluster is down, c02 running the
// Compose app web with an env file that fails its health check where a
// release reads it), r03-r07 labelled ring: rest, all reporting to p.
type steerFleet struct {
	*testenv.Fleet
	t        *testing.T
	p        *testenv.Prometheus
	web      *steerWeb
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
//   - v2 adds a Helm app, makes the Compose app web read UNHEALTHY from
//     the device's env file, and has a plan (canaries c00-c02 at once,
//     r03-r07 after 40s). Two real failure modes: c01 runs a Helm applier
//     whose cluster is down, so the Helm applier fails v2; c02 runs web
//     on the test's Docker Engine with a device-local web.env that sets
//     UNHEALTHY=1, so v2's container fails its health check and the
//     Compose applier rolls web back to v1's container. Both agents go
//     back to v1; c00 and the others have neither applier (the apps are
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
//     failing canaries stay on v1 (c02's web still v1's container);
//   - the next release, v3 (without the Helm app, web no longer reading
//     UNHEALTHY), reaches every agent, and c02 runs v3's web.
func TestRolloutSteer(t *testing.T) {
	const restAfter = 40 * time.Second
	s := startSteerFleet(t, 2*time.Second)
	s.web.write("v1", false)
	d1 := s.Push("stable", time.Now().Add(-time.Hour).Truncate(time.Second), "")
	for _, d := range s.devs {
		d.proc = s.StartAgent(d.cfg)
	}
	s.all(s.devs, d1, "v1")
	s.webOn(d1, "v1", "v1")
	for _, d := range s.devs {
		d.v1Tree = treeHash(t, filepath.Join(d.state, "sources", testenv.FleetSource, "current"))
	}
	// Every device reports before the watch counts them.
	testenv.Eventually(t, 60*time.Second, func() bool {
		return len(s.p.Vector(fmt.Sprintf(`berth_source_applied_info{source="line-3",digest=%q}`, d1))) == len(s.devs)
	}, "the devices never reported v1 to Prometheus")

	// v2: a Helm app, web reading the device's UNHEALTHY, and the plan;
	// the breaker trips on the canaries.
	writeChart(t, filepath.Join(s.Repo, "charts", "db"))
	s.web.write("v2", true)
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
	resumed := time.Now()
	s.OK("rollout", "resume", s.URL("stable"), "--sign-key", s.Key, "--reason", "canary failures are the canaries' devices")
	s.all(s.healthy, d2, "after resume")
	s.failedV2(d1, d2, resumed, "after resume")

	s.abort(d1, d2)

	// The next release, without the Helm app and with a web that no
	// longer reads UNHEALTHY, proceeds normally, c02's web included.
	s.web.write("v3", false)
	d3 := s.Push("stable", time.Now().Truncate(time.Second), "")
	s.all(s.devs, d3, "v3 after the abort")
	s.webOn(d3, "v3", "v3")
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
	s.web = startSteerWeb(t, s.Fleet)
	for i := range 8 {
		d := &steerDevice{id: fmt.Sprintf("c%02d", i)}
		labels := map[string]string{"ring": "canary", "site": "berlin"}
		extra := fmt.Sprintf("report:\n  prometheus: {remoteWrite: %s, interval: 1s, insecure: true}\n", s.p.WriteURL())
		switch {
		case i >= 3:
			d.id, labels["ring"] = fmt.Sprintf("r%02d", i), "rest"
			s.rest = append(s.rest, d)
		case i == 1:
			extra += fmt.Sprintf("apply:\n  helm: {kubeconfig: %s}\n", kubeconfig)
			d.fails = "helm"
			s.failing = append(s.failing, d)
		case i == 2:
			extra += s.web.applyBlock()
			d.fails = `app "web" (project ` + steerWebProject + `): service "hello"`
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
	for _, d := range s.failing {
		s.OK("agent", "--config", d.cfg, "--check-config")
	}
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
	s.failedV2(d1, d2, created, "after the breaker tripped")
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
	// The failing canaries retried v2 until they read the abort; once
	// they have, none is in the middle of an apply of v2.
	s.until(30*time.Second, "the failing canaries never read the abort", func() string {
		for _, d := range s.failing {
			if r := s.record(d, d2); r == nil || r.Action != "abort" {
				return fmt.Sprintf("%s: release record %+v", d.id, r)
			}
		}
		return ""
	})
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
	s.webOn(d1, "v1", "after the abort")
	for _, d := range s.healthy {
		if st := s.state(d); st.Applied == nil || st.Applied.Outcome != "rolled-back" {
			t.Errorf("%s went back from v2 with %+v, want outcome rolled-back", d.id, st.Applied)
		}
		if r := s.record(d, d2); r == nil || r.Action != "abort" {
			t.Errorf("%s after the abort: release record %+v", d.id, r)
		}
	}
}

// failedV2 waits until each failing canary has failed v2 (d2) since
// since, with its own applier's error, and is back on v1 (d1): its
// `current`, what it reports applied, and for c02 its web app, v1's
// container, healthy, serving v1. (They retry v2 while nothing holds
// them, switching it in for the length of an apply, hence the wait.)
func (s *steerFleet) failedV2(d1, d2 string, since time.Time, when string) {
	s.t.Helper()
	for _, d := range s.failing {
		s.until(60*time.Second, d.id+" "+when, func() string {
			st := s.state(d)
			if cur := testenv.FleetCurrent(d.state); cur != d1 || st.Applied == nil || st.Applied.Digest != d1 || s.record(d, d2) == nil {
				return fmt.Sprintf("on %s, want back on v1 %s with a record of v2:\n%s", cur, d1, steerJSON(st))
			}
			if !slices.ContainsFunc(st.History, func(r steerRecord) bool {
				return r.Digest == d2 && r.Outcome == "failed" && !r.Time.Before(since) && strings.Contains(r.Error, d.fails)
			}) {
				return fmt.Sprintf("no failure of v2 since %s that says %q:\n%s", since.Format(time.RFC3339), d.fails, steerJSON(st))
			}
			if d.id != "c02" {
				return ""
			}
			if !slices.ContainsFunc(st.History, func(r steerRecord) bool {
				return r.Digest == d2 && strings.Contains(r.Error, "unhealthy") && strings.Contains(r.Error, "rolled back to revision "+d1)
			}) {
				return "its v2 failure does not say the health check failed and web went back to v1:\n" + steerJSON(st)
			}
			return s.web.on(d1, "v1")
		})
	}
}

// webOn waits until c02 has applied digest and its web app is the
// container of digest, healthy, serving message.
func (s *steerFleet) webOn(digest, message, when string) {
	s.t.Helper()
	c02 := s.failing[1]
	s.until(60*time.Second, "c02's web "+when, func() string {
		if st := s.state(c02); st.Applied == nil || st.Applied.Digest != digest || st.Applied.Outcome != "applied" {
			return fmt.Sprintf("c02 has not applied %s:\n%s", digest, steerJSON(st))
		}
		return s.web.on(digest, message)
	})
}

// until polls check until it returns "", and fails the test with what it
// returned last when it still does not after timeout.
func (s *steerFleet) until(timeout time.Duration, what string, check func() string) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s.alive()
		why := check()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: %s%s", what, why, s.dump(s.devs))
		}
		time.Sleep(250 * time.Millisecond)
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
