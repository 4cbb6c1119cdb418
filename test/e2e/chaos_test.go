package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/store"
)

// usage is what a running agent holds.
type usage struct {
	rssKiB, fds, goroutines int
}

func (u usage) String() string {
	return fmt.Sprintf("RSS %.1f MiB, %d fds, %d goroutines", float64(u.rssKiB)/1024, u.fds, u.goroutines)
}

// sampleUsage reads the RSS and file descriptors of pid from /proc and its
// goroutines from its /metrics (go_goroutines).
func sampleUsage(t *testing.T, pid, port int) usage {
	t.Helper()
	var u usage
	u.rssKiB = procStatusKiB(t, pid, "VmRSS:")
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("fds of the agent: %v", err)
	}
	u.fds = len(fds)
	body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, "go_goroutines "); ok {
			u.goroutines, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if u.goroutines == 0 {
		t.Fatal("no go_goroutines in the agent's metrics")
	}
	return u
}

// procStatusKiB reads a kB field of /proc/PID/status (VmRSS:, VmHWM:).
func procStatusKiB(t *testing.T, pid int, field string) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("status of %d: %v", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// chaosEnv is an agent tracking a source through a faulty proxy, with a
// faulty proxy as its registry mirror, both in front of the real registry.
type chaosEnv struct {
	*agentEnv
	src, mir *testenv.Proxy
	port     int
	client   *api.Client
	proc     *testenv.Process
	created  int // the created offset of the next publish
}

const (
	chaosInterval = 2 * time.Second
	chaosTimeout  = 3 * time.Second
)

func newChaosEnv(t *testing.T) *chaosEnv {
	t.Helper()
	a := newAgentEnv(t)
	// 64 KiB that do not compress: every body fault bites the layer.
	if err := writeRandom(filepath.Join(a.repo, "blob.bin"), 64<<10); err != nil {
		t.Fatal(err)
	}
	c := &chaosEnv{agentEnv: a, src: testenv.StartProxy(t, a.reg), mir: testenv.StartProxy(t, a.reg), port: freePort(t), created: 1}
	docker := a.reg.DockerConfigFor(t, c.src.Host(), c.mir.Host())
	cfg := fmt.Sprintf(`stateDir: %s
listen: 127.0.0.1:%d
sources:
  - name: line-3
    url: oci://%s/fleet/line-3
    ref: {tag: stable}
    interval: %s
    timeout: %s
    jitter: 0
    verify: {keys: [%s]}
    credentials: {dockerConfig: %s/config.json}
    caFile: %s
registries:
  - source: %s/fleet
    mirrors: [%s/fleet]
`, a.stateDir, c.port, c.src.Host(), chaosInterval, chaosTimeout, a.pub, docker, a.reg.CAFile, c.src.Host(), c.mir.Host())
	a.cfgPath = filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(a.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c.client = api.NewClient(filepath.Join(a.stateDir, "berth.sock"))
	return c
}

// next publishes a new revision to stable.
func (c *chaosEnv) next() string {
	c.created++
	return c.publish("stable", c.key, c.created)
}

func (c *chaosEnv) sourceStatus() api.SourceStatus {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.client.Status(ctx)
	if err != nil || len(st.Sources) != 1 {
		c.t.Fatalf("status: %v", err)
	}
	return st.Sources[0]
}

// refusedSince fails the test if the agent recorded a refusal since t0.
func (c *chaosEnv) refusedSince(t0 time.Time, what string) {
	c.t.Helper()
	ss := c.sourceStatus()
	for _, r := range append(slices.Clone(ss.History), *ss.Last) {
		if r.Outcome == store.OutcomeRefused && !r.Time.Before(t0) {
			c.t.Fatalf("%s: a transport fault was recorded as refused: %s", what, r.Error)
		}
	}
}

// TestAgentChaos runs the agent binary against the real registry through
// a source proxy and a mirror proxy that inject each fault in turn:
// refuse, 500, 1 KB/s, reset mid-body, truncate, flap. For each: with the
// mirror faulty the source serves (the next endpoint is tried); with both
// faulty the last good revision stays and the outcome is error, never
// refused; once the fault lifts the new revision is applied within an
// interval of the reconcile in flight ending. The agent's RSS, file
// descriptors and goroutines stay flat across all of it.
func TestAgentChaos(t *testing.T) {
	c := newChaosEnv(t)
	v := c.next()
	c.proc = c.startAgent()
	c.waitApplied(v)
	time.Sleep(2 * chaosInterval) // a few steady polls
	before := sampleUsage(t, c.proc.Pid(), c.port)

	var report []string
	for _, mode := range []testenv.Fault{testenv.FaultRefuse, testenv.Fault500, testenv.FaultSlow, testenv.FaultReset, testenv.FaultTruncate, testenv.FaultFlap} {
		t.Run(mode.String(), func(t *testing.T) {
			c.t = t
			defer func() { c.src.SetFault(testenv.FaultNone); c.mir.SetFault(testenv.FaultNone) }()
			// The mirror is faulty: the next endpoint, the source, serves.
			t0 := time.Now()
			c.mir.SetFault(mode)
			va := c.next()
			testenv.Eventually(t, 60*time.Second, func() bool { return c.current() == va }, "%s on the mirror: %s never applied", mode, va)
			ss := c.sourceStatus()
			if mode != testenv.FaultFlap && (ss.Applied.Via == nil || ss.Applied.Via.Layer != store.ViaSource) {
				t.Errorf("%s on the mirror: the layer came from %+v, want the source", mode, ss.Applied.Via)
			}
			c.refusedSince(t0, mode.String()+" on the mirror")

			// Both are faulty: the last good revision stays, the outcome
			// is error.
			t1 := time.Now()
			c.src.SetFault(mode)
			vb := c.next()
			var last store.Revision
			testenv.Eventually(t, 60*time.Second, func() bool {
				ss := c.sourceStatus()
				if ss.Last != nil && ss.Last.Time.After(t1) && ss.Last.Outcome != store.OutcomeUnchanged {
					last = *ss.Last
					return true
				}
				return false
			}, "%s on both: no reconcile ended", mode)
			c.refusedSince(t1, mode.String()+" on both")
			if mode != testenv.FaultFlap {
				if last.Outcome != store.OutcomeError {
					t.Fatalf("%s on both: outcome %s (%s), want error", mode, last.Outcome, last.Error)
				}
				if cur := c.current(); cur != va {
					t.Fatalf("%s on both: current moved to %s", mode, cur)
				}
			} else if cur := c.current(); cur != va && cur != vb {
				t.Fatalf("flapping: current is %s, neither the last good %s nor the new %s", cur, va, vb)
			}

			// The fault lifts: applied within an interval of the
			// reconcile in flight ending.
			c.src.SetFault(testenv.FaultNone)
			c.mir.SetFault(testenv.FaultNone)
			lifted := time.Now()
			var idle time.Time
			testenv.Eventually(t, 60*time.Second, func() bool {
				if idle.IsZero() && !c.sourceStatus().Reconciling {
					idle = time.Now()
				}
				return c.current() == vb
			}, "%s lifted: %s never applied", mode, vb)
			recovered := time.Since(lifted)
			if idle.IsZero() {
				idle = lifted
			}
			if after := time.Since(idle); after > chaosInterval+3*time.Second {
				t.Errorf("%s lifted: applied %v after the reconcile in flight ended, want within the interval %v (plus the reconcile itself)", mode, after.Round(time.Millisecond), chaosInterval)
			}
			line := fmt.Sprintf("%-8s mirror faulty: applied via %s; both faulty: %s (%s); recovered %v after the fault lifted (%v after the reconcile in flight ended)",
				mode, viaOf(ss.Applied.Via), last.Outcome, clipErr(last.Error), recovered.Round(time.Millisecond), time.Since(idle).Round(time.Millisecond))
			report = append(report, line)
			t.Log(line)
		})
		c.t = t
	}
	time.Sleep(2 * chaosInterval)
	after := sampleUsage(t, c.proc.Pid(), c.port)
	t.Logf("agent before the faults: %s; after: %s", before, after)
	for _, l := range report {
		t.Log(l)
	}
	// The logs say which: transport errors, retried; never a refusal.
	if logs := c.proc.Stderr(); strings.Contains(logs, "reconcile refused") || !strings.Contains(logs, "the transfer broke; retrying") {
		t.Error("the agent's log does not report the faults as transport errors, retried")
	}
	if after.goroutines > before.goroutines+8 || after.fds > before.fds+8 || after.rssKiB > before.rssKiB+40<<10 {
		t.Errorf("the agent's resources grew through the faults: before %s, after %s", before, after)
	}
}

func viaOf(v *store.Via) string {
	if v == nil {
		return "?"
	}
	return fmt.Sprintf("manifest=%s signatures=%s layer=%s", v.Manifest, v.Signatures, v.Layer)
}

func clipErr(s string) string {
	if len(s) > 160 {
		return s[:160] + "…"
	}
	return s
}
