package bench

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/reconcile/store"
)

// BenchmarkAgentIdleRSS starts `berth agent` with three sources polling
// every 2s, waits until each has applied its revision, lets it poll a few
// times with nothing new, and reports the resident
// memory of the idle agent (target: <= 30 MiB) next to that of the
// registry daemon serving it (distribution, another idle Go server) for
// scale.
func BenchmarkAgentIdleRSS(b *testing.B) {
	e := newEnv(b)
	stateDir := filepath.Join(b.TempDir(), "state")
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "stateDir: %s\nsources:\n", stateDir)
	for i := range 3 {
		a := e.pushArtifact(fmt.Sprintf("idle%d", i), 1<<20, 256<<10)
		fmt.Fprintf(&cfg, `  - name: src-%d
    url: %s
    ref: {tag: %s}
    interval: 2s
    verify: {keys: [%s]}
    credentials: {dockerConfig: %s}
    caFile: %s
`, i, strings.TrimSuffix(a.url, ":"+a.tag), a.tag, e.pub, e.reg.DockerConfig, e.reg.CAFile)
	}
	cfgPath := filepath.Join(b.TempDir(), "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(e.berth, "agent", "--config", cfgPath)
	cmd.Env = e.environ()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := store.ReadState(stateDir)
		applied := 0
		if err == nil {
			for _, s := range st.Sources {
				if s.Applied != nil {
					applied++
				}
			}
		}
		if applied == 3 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the agent did not apply its three sources in time")
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Idle is steady polling: several unchanged polls of every source (each
	// a HEAD request), so the pages the poll path needs are counted.
	time.Sleep(10 * time.Second)
	agent := rssMiB(b, cmd.Process.Pid, "VmRSS:")
	registry := registryRSS(b, e.reg.ConfigFile)
	b.ReportMetric(agent, "agent-idle-rss-MiB")
	// Heap and stacks vs the binary's code and data pages.
	b.ReportMetric(rssMiB(b, cmd.Process.Pid, "RssAnon:"), "agent-anon-MiB")
	b.ReportMetric(rssMiB(b, cmd.Process.Pid, "RssFile:"), "agent-file-MiB")
	b.ReportMetric(registry, "registry-idle-rss-MiB")
	b.ReportMetric(agent/registry, "ratio-vs-registry")
	b.ReportMetric(agent/30, "ratio-vs-30MiB-target")
}

// rssMiB reads a memory field (VmRSS:, RssAnon:, RssFile:) of a process.
func rssMiB(b *testing.B, pid int, field string) float64 {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// registryRSS finds the docker-registry process serving configFile.
func registryRSS(b *testing.B, configFile string) float64 {
	b.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmdline, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(cmdline), "docker-registry") || !strings.Contains(string(cmdline), configFile) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err == nil {
			return rssMiB(b, pid, "VmRSS:")
		}
	}
	b.Fatal("docker-registry process not found")
	return 0
}
