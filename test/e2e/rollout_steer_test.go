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
	failing        bool   // its v2 apply fails (a Helm applier whose cluster is down)
	v1Tree         string // the hash of its current tree on v1
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
	const (
		interval  = 2 * time.Second
		restAfter = 40 * time.Second
	)
	f := testenv.StartFleet(t)
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{})
	strangerKey := steerKey(t, f, "stranger")

	// A kubeconfig whose API server is down, as on a device whose k3s
	// does not start.
	kubeconfig := filepath.Join(f.Dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters: [{name: k3s, cluster: {server: "https://%s"}}]
users: [{name: berth, user: {token: t0ken}}]
contexts: [{name: k3s, context: {cluster: k3s, user: berth}}]
current-context: k3s
`, closedAddr(t)), 0o600); err != nil {
		t.Fatal(err)
	}

	d1 := f.Push("stable", time.Now().Add(-time.Hour).Truncate(time.Second), "")
	var devs []*steerDevice
	for i := range 8 {
		d := &steerDevice{id: fmt.Sprintf("c%02d", i)}
		labels := map[string]string{"ring": "canary", "site": "berlin"}
		extra := fmt.Sprintf("report:\n  prometheus: {remoteWrite: %s, interval: 1s, insecure: true}\n", p.WriteURL())
		switch {
		case i >= 3:
			d.id, labels["ring"] = fmt.Sprintf("r%02d", i), "rest"
		case i > 0:
			d.failing = true
			extra += fmt.Sprintf("apply:\n  helm: {kubeconfig: %s}\n", kubeconfig)
		}
		d.cfg, d.state = f.AgentConfig(filepath.Join(f.Dir, d.id), testenv.FleetAgent{
			ID: d.id, Labels: labels, Interval: interval, Jitter: "0", LogLevel: "info", Extra: extra,
		})
		devs = append(devs, d)
	}
	f.OK("agent", "--config", devs[1].cfg, "--check-config")
	for _, d := range devs {
		d.proc = f.StartAgent(d.cfg)
	}
	failing, rest := devs[1:3], devs[3:]
	alive := func() {
		t.Helper()
		for _, d := range devs {
			select {
			case <-d.proc.Done():
				t.Fatalf("agent %s exited: %s", d.id, d.proc.Stderr())
			default:
			}
		}
	}
	// all waits until every device of ds is on digest.
	all := func(ds []*steerDevice, digest, what string) {
		t.Helper()
		on := func() bool {
			alive()
			for _, d := range ds {
				if testenv.FleetCurrent(d.state) != digest {
					return false
				}
			}
			return true
		}
		for deadline := time.Now().Add(90 * time.Second); !on(); time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not every device reached %s:%s", what, digest, steerDump(f, ds))
			}
		}
	}
	all(devs, d1, "v1")
	for _, d := range devs {
		d.v1Tree = treeHash(t, filepath.Join(d.state, "sources", testenv.FleetSource, "current"))
	}
	// Every device reports before the watch counts them.
	testenv.Eventually(t, 60*time.Second, func() bool {
		return len(p.Vector(fmt.Sprintf(`berth_source_applied_info{source="line-3",digest=%q}`, d1))) == len(devs)
	}, "the devices never reported v1 to Prometheus")

	// v2: a Helm app, and the plan.
	writeChart(t, filepath.Join(f.Repo, "charts", "db"))
	created := time.Now().Truncate(time.Second)
	d2 := f.Push("stable", created, steerHelmApp+fmt.Sprintf(steerPlan, restAfter))
	restOpens := created.Add(restAfter)

	watch := testenv.StartProcess(t, testenv.RunOptions{Env: f.Env()}, f.Bin, "rollout", "watch", f.URL("stable"),
		"--prometheus", p.URL(), "--source", testenv.FleetSource, "--key", f.Pub,
		"--max-failed", "50%", "--min-devices", "3", "--sign-key", f.Key, "--poll", "500ms", "--max-wait", "3m")
	select {
	case <-watch.Done():
	case <-time.After(restAfter + time.Minute):
		t.Fatalf("rollout watch never tripped:\n%s%s", lastLines(watch.Stderr(), 10), steerDump(f, devs))
	}
	if code := watch.ExitCode(); code != 2 {
		t.Fatalf("rollout watch: exit %d, want 2 (the breaker tripped)\nstdout: %s\nstderr: %s%s", code, watch.Stdout(), watch.Stderr(), steerDump(f, devs))
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
	// The failing canaries tried v2 and went back to v1; the pause is in
	// the registry, signed with the trusted key.
	for _, d := range failing {
		st := steerState(t, f, d)
		if st.Applied == nil || st.Applied.Digest != d1 || testenv.FleetCurrent(d.state) != d1 || steerRecord(t, f, d, d2) == nil ||
			!slices.ContainsFunc(st.History, func(r struct{ Digest, Outcome, Error string }) bool {
				return r.Digest == d2 && r.Outcome == "failed" && strings.Contains(r.Error, "helm")
			}) {
			t.Errorf("%s after failing v2: %s", d.id, steerJSON(st))
		}
	}
	planOf := func() planOut {
		t.Helper()
		var po planOut
		if err := json.Unmarshal([]byte(f.OK("rollout", "plan", f.URL("stable"), "--key", f.Pub, "--output", "json")), &po); err != nil {
			t.Fatal(err)
		}
		return po
	}
	if po := planOf(); po.Digest != d2 || po.Statements == nil || po.Statements.Latest == nil || po.Statements.Latest.Action != "pause" ||
		!strings.Contains(po.Statements.Latest.Reason, want) {
		t.Fatalf("the statements of v2 after the breaker: %+v", po.Statements)
	}

	// Wave rest opens: without the pause its agents would adopt v2.
	time.Sleep(time.Until(restOpens.Add(3 * interval)))
	paused := func(when string) {
		t.Helper()
		alive()
		for _, d := range rest {
			st := steerState(t, f, d)
			if cur := testenv.FleetCurrent(d.state); cur != d1 || st.Applied == nil || st.Applied.Digest != d1 ||
				st.Waiting == nil || st.Waiting.Digest != d2 || st.Waiting.Reason != "paused" {
				t.Errorf("%s %s: on %s, want v1 %s, waiting paused on v2:\n%s", d.id, when, cur, d1, steerJSON(st))
			}
		}
		if cur := testenv.FleetCurrent(devs[0].state); cur != d2 {
			t.Errorf("c00 %s: on %s, want v2 %s (a pause keeps devices on the release)", when, cur, d2)
		}
	}
	paused("after wave rest opened")
	testenv.Eventually(t, 30*time.Second, func() bool {
		return slices.Equal(promDevices(p, fmt.Sprintf(`berth_rollout_waiting{reason="paused",digest=%q,ring="rest"}`, d2)), ids(rest))
	}, "berth_rollout_waiting{reason=\"paused\"} never named the rest devices: %v", promDevices(p, `berth_rollout_waiting{reason="paused"}`))

	// A resume signed by a key the agents do not trust: read, ignored,
	// reported, and nothing moves.
	time.Sleep(1100 * time.Millisecond) // statements are signed to the second
	f.OK("rollout", "resume", f.URL("stable"), "--sign-key", strangerKey, "--reason", "not ours")
	strangerAt := time.Now()
	testenv.Eventually(t, 30*time.Second, func() bool {
		for _, d := range rest {
			r := steerRecord(t, f, d, d2)
			if r == nil || r.LookedUp.Before(strangerAt.Add(interval)) || r.Ignored != 1 {
				return false
			}
		}
		return true
	}, "the agents never read the untrusted resume")
	for _, d := range rest {
		r := steerRecord(t, f, d, d2)
		if r.Action != "pause" || r.Verdict != "paused" || !strings.Contains(r.IgnoredReason, "not signed by a trusted signer") {
			t.Errorf("%s after an untrusted resume: %+v", d.id, *r)
		}
		if !strings.Contains(d.proc.Stderr(), "rollout statement ignored") {
			t.Errorf("%s did not log the ignored statement:\n%s", d.id, lastLines(d.proc.Stderr(), 10))
		}
	}
	paused("after an untrusted resume")

	// The signed resume: the rest adopt v2 (their wave is open); the
	// failing canaries still fail it and stay on v1.
	f.OK("rollout", "resume", f.URL("stable"), "--sign-key", f.Key, "--reason", "canary failures are the canaries' cluster")
	all(append([]*steerDevice{devs[0]}, rest...), d2, "after resume")
	for _, d := range failing {
		if cur := testenv.FleetCurrent(d.state); cur != d1 {
			t.Errorf("%s after resume: on %s, want v1 (its v2 apply fails)", d.id, cur)
		}
	}

	// The signed abort: every device on v2 goes back to what it ran
	// before, the same bytes; the others stay on v1.
	time.Sleep(1100 * time.Millisecond)
	f.OK("rollout", "abort", f.URL("stable"), "--sign-key", f.Key, "--reason", "v2 hurts")
	all(devs, d1, "after abort")
	time.Sleep(3 * interval) // and it stays so: no agent takes v2 again
	for _, d := range devs {
		st := steerState(t, f, d)
		if cur := testenv.FleetCurrent(d.state); cur != d1 || st.Applied == nil || st.Applied.Digest != d1 {
			t.Errorf("%s after the abort: on %s:\n%s", d.id, cur, steerJSON(st))
		}
		if got := treeHash(t, filepath.Join(d.state, "sources", testenv.FleetSource, "current")); got != d.v1Tree {
			t.Errorf("%s after the abort: the tree it runs (%s) is not the one it ran on v1 (%s)", d.id, got, d.v1Tree)
		}
	}
	for _, d := range append([]*steerDevice{devs[0]}, rest...) {
		if st := steerState(t, f, d); st.Applied == nil || st.Applied.Outcome != "rolled-back" {
			t.Errorf("%s went back from v2 with %+v, want outcome rolled-back", d.id, st.Applied)
		}
		if r := steerRecord(t, f, d, d2); r == nil || r.Action != "abort" {
			t.Errorf("%s after the abort: release record %+v", d.id, r)
		}
	}

	// The next release, without the Helm app, proceeds normally.
	d3 := f.Push("stable", time.Now().Truncate(time.Second), "")
	all(devs, d3, "v3 after the abort")
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

func steerState(t *testing.T, f *testenv.Fleet, d *steerDevice) steerSource {
	t.Helper()
	out, errOut, code := f.Berth("status", "--config", d.cfg, "--output", "json")
	var st steerStatus
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Sources) != 1 {
		t.Fatalf("%s: berth status: exit %d\n%s\n%s", d.id, code, out, errOut)
	}
	return st.Sources[0]
}

// steerRecord is the device's record of the release digest; nil when
// none.
func steerRecord(t *testing.T, f *testenv.Fleet, d *steerDevice, digest string) *steerRelease {
	t.Helper()
	st := steerState(t, f, d)
	for i, r := range st.Release {
		if r.Digest == digest {
			return &st.Release[i]
		}
	}
	return nil
}

func steerJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// steerDump is each device's status, for failures.
func steerDump(f *testenv.Fleet, ds []*steerDevice) string {
	var b strings.Builder
	for _, d := range ds {
		out, _, _ := f.Berth("status", "--config", d.cfg)
		fmt.Fprintf(&b, "\n%s (on %s):\n%s\nlog:\n%s", d.id, testenv.FleetCurrent(d.state), out, lastLines(d.proc.Stderr(), 8))
	}
	return b.String()
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
