package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/store"
)

// soakCycles is the number of reconciles of BenchmarkAgentSoak.
const soakCycles = 10_000

// soakSwitchEvery is how often (in cycles) the soak moves the tag, so
// that the agent pulls, switches, applies and collects a revision.
const soakSwitchEvery = 1_000

// BenchmarkAgentSoak runs `berth agent` against the registry for 10,000
// reconciles (POST /reconcile on its socket, one after the other): all
// unchanged polls but one pull, switch and garbage collection every 1,000,
// the tag moving between two revisions. It reports the agent's RSS,
// goroutines and open file descriptors at the start (after the first
// apply and 100 warm-up reconciles), half-way and at the end: a leak
// shows as growth from the middle to the end (the first applies fault in
// the code and heap of the pull path, after which the figures are flat).
// It asserts what each reconcile did, never a timing.
func BenchmarkAgentSoak(b *testing.B) {
	e := newEnv(b)
	v1, v2 := e.pushSoak("v1", 1), e.pushSoak("v2", 2)
	stateDir := filepath.Join(b.TempDir(), "state")
	port := soakPort(b)
	cfg := fmt.Sprintf(`stateDir: %s
listen: 127.0.0.1:%d
keepRevisions: 1
allowDowngrade: true
sources:
  - name: soak
    url: oci://%s/bench/soak
    ref: {tag: stable}
    interval: 1h
    verify: {keys: [%s]}
    credentials: {dockerConfig: %s}
    caFile: %s
`, stateDir, port, e.reg.Host(), e.pub, e.reg.DockerConfig, e.reg.CAFile)
	cfgPath := filepath.Join(b.TempDir(), "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	testenv.SeedTags(b, e.reg, "bench/soak", v1, []string{"stable"})
	cmd := exec.Command(e.berth, "agent", "--config", cfgPath)
	cmd.Env = e.environ()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	client := api.NewClient(filepath.Join(stateDir, "berth.sock"))
	reconcile := func() api.ReconcileResult {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		res, err := client.Reconcile(ctx, "soak", api.ReconcileOptions{})
		if err != nil || len(res) != 1 {
			b.Fatalf("reconcile: %v %+v", err, res)
		}
		return res[0]
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(stateDir, "berth.sock")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the agent's socket never appeared")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := reconcile(); (r.Outcome != "applied" && r.Outcome != "unchanged") || r.Digest != v1 {
		b.Fatalf("first reconcile: %+v", r)
	}
	for range 100 {
		reconcile()
	}
	pid := cmd.Process.Pid
	start := soakSample(b, pid, port)
	begun := time.Now()
	applied, want := 0, v1
	var mid soakUsage
	cycles := soakCycles
	if s := os.Getenv("BERTH_SOAK_CYCLES"); s != "" { // a shorter run while investigating
		cycles, _ = strconv.Atoi(s)
	}
	for i := 1; i <= cycles; i++ {
		if i%soakSwitchEvery == 0 {
			want = map[string]string{v1: v2, v2: v1}[want]
			testenv.SeedTags(b, e.reg, "bench/soak", want, []string{"stable"})
		}
		if i == cycles/2 {
			mid = soakSample(b, pid, port)
		}
		r := reconcile()
		switch {
		case r.Digest != want:
			b.Fatalf("cycle %d: %+v, want %s", i, r, want)
		case r.Outcome == "applied":
			applied++
		case r.Outcome != "unchanged":
			b.Fatalf("cycle %d: %+v", i, r)
		}
	}
	elapsed := time.Since(begun)
	time.Sleep(2 * time.Second) // let the last apply's garbage go
	end := soakSample(b, pid, port)
	if applied != cycles/soakSwitchEvery {
		b.Errorf("%d applies in %d cycles, want %d", applied, cycles, cycles/soakSwitchEvery)
	}
	st, err := store.ReadState(stateDir)
	if err != nil || st.Sources["soak"].Applied.Digest != want {
		b.Errorf("state.json: %v", err)
	}
	b.Logf("%d reconciles (%d applies) in %s:\n  start  %s\n  middle %s\n  end    %s", cycles, applied, elapsed.Round(time.Millisecond), start, mid, end)
	b.ReportMetric(float64(cycles), "cycles")
	b.ReportMetric(float64(cycles)/elapsed.Seconds(), "cycles/s")
	b.ReportMetric(start.rss, "rss-start-MiB")
	b.ReportMetric(mid.rss, "rss-mid-MiB")
	b.ReportMetric(end.rss, "rss-end-MiB")
	b.ReportMetric(start.anon, "anon-start-MiB")
	b.ReportMetric(end.anon, "anon-end-MiB")
	b.ReportMetric(start.heap, "heap-start-MiB")
	b.ReportMetric(end.heap, "heap-end-MiB")
	b.ReportMetric(float64(start.goroutines), "goroutines-start")
	b.ReportMetric(float64(end.goroutines), "goroutines-end")
	b.ReportMetric(float64(start.fds), "fds-start")
	b.ReportMetric(float64(end.fds), "fds-end")
}

// soakUsage is what the agent holds.
type soakUsage struct {
	// MiB: resident, of it anonymous (heap, stacks) and file-backed (the
	// binary's pages), and the Go heap in use.
	rss, anon, file, heap float64
	goroutines, fds       int
}

func (u soakUsage) String() string {
	return fmt.Sprintf("RSS %.1f MiB (anon %.1f, file %.1f; Go heap in use %.1f), %d goroutines, %d fds", u.rss, u.anon, u.file, u.heap, u.goroutines, u.fds)
}

func soakSample(b *testing.B, pid, port int) soakUsage {
	b.Helper()
	u := soakUsage{rss: rssMiB(b, pid, "VmRSS:"), anon: rssMiB(b, pid, "RssAnon:"), file: rssMiB(b, pid, "RssFile:")}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		b.Fatal(err)
	}
	u.fds = len(fds)
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var body strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		body.Write(buf[:n])
		if err != nil {
			break
		}
	}
	for _, l := range strings.Split(body.String(), "\n") {
		if v, ok := strings.CutPrefix(l, "go_goroutines "); ok {
			u.goroutines, _ = strconv.Atoi(strings.TrimSpace(v))
		}
		if v, ok := strings.CutPrefix(l, "go_memstats_heap_inuse_bytes "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			u.heap = f / (1 << 20)
		}
	}
	return u
}

// pushSoak pushes a small signed artifact to bench/soak:tag, its commit
// time offset minutes after the default, and returns its digest.
func (e *env) pushSoak(tag string, offset int) string {
	e.b.Helper()
	src := filepath.Join(e.b.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		e.b.Fatal(err)
	}
	files := map[string]string{
		"berth.yaml":  "apiVersion: berth.dev/v1\nkind: DeviceState\napps: []\n",
		"VERSION":     tag + "\n",
		"config/a.sh": strings.Repeat("echo soak\n", 1000),
	}
	for name, content := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			e.b.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			e.b.Fatal(err)
		}
	}
	repo := testenv.GitRepo(e.b, src)
	testenv.GitCommitAll(e.b, repo, testenv.GitOptions{Time: testenv.DefaultGitTime.Add(time.Duration(offset) * time.Minute), Message: tag})
	out, _ := e.run(nil, "push", repo, "oci://"+e.reg.Host()+"/bench/soak:"+tag, "--sign-key", e.key, "--output", "json")
	var res struct{ Digest string }
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Digest == "" {
		e.b.Fatalf("push: %v %s", err, out)
	}
	return res.Digest
}

func soakPort(b *testing.B) int {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
