package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

type status struct {
	Sources []struct {
		Name      string
		Suspended bool
		Applied   *struct{ Digest, Tag string }
		Last      *struct{ Outcome, Digest, Error string }
	}
}

func (a *agentEnv) status() status {
	a.t.Helper()
	var st status
	out, errOut, code := testenv.Run(a.t, a.bin, nil, "status", "--config", a.cfgPath, "--output", "json")
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Sources) != 1 {
		a.t.Fatalf("status: exit %d %q %s", code, out, errOut)
	}
	return st
}

// startAgent runs the agent in the background until the test ends.
func (a *agentEnv) startAgent() *testenv.Process {
	a.t.Helper()
	p := testenv.StartProcess(a.t, testenv.RunOptions{}, a.bin, "agent", "--config", a.cfgPath, "--log-level", "debug")
	testenv.Eventually(a.t, 30*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(a.stateDir, "berth.sock"))
		return err == nil
	}, "agent socket never appeared; stderr:\n%s", p.Stderr())
	return p
}

func (a *agentEnv) waitApplied(digest string) {
	a.t.Helper()
	testenv.Eventually(a.t, 30*time.Second, func() bool { return a.current() == digest }, "current never became %s", digest)
}

// TestAgentDaemon runs the agent as a daemon and drives it through its API:
// status, reconcile --now, webhook, suspend/resume, rollback, metrics, and a
// registry outage.
func TestAgentDaemon(t *testing.T) {
	a := newAgentEnv(t)
	v1 := a.publish("stable", a.key, 1)
	port := freePort(t)
	a.writeConfig("ref: {tag: stable}", fmt.Sprintf("listen: 127.0.0.1:%d", port))
	p := a.startAgent()
	a.waitApplied(v1)

	if st := a.status(); st.Sources[0].Applied == nil || st.Sources[0].Applied.Digest != v1 {
		t.Fatalf("status = %+v", st)
	}
	if fi, err := os.Stat(filepath.Join(a.stateDir, "berth.sock")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, %v; want 0600", fi.Mode(), err)
	}

	// A registry notification triggers a reconcile at once (interval is 2s,
	// so use a long one to prove the hook did it).
	a.interval = "10m"
	a.writeConfig("ref: {tag: stable}", fmt.Sprintf("listen: 127.0.0.1:%d", port))
	p.Stop()
	p = a.startAgent()
	testenv.Eventually(t, 20*time.Second, func() bool { return httpOK(fmt.Sprintf("http://127.0.0.1:%d/readyz", port)) }, "agent never ready")
	v2 := a.publish("stable", a.key, 2)
	hook := fmt.Sprintf(`{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"repository":"fleet/line-3","tag":"stable","url":"https://%s/v2/fleet/line-3/manifests/%s"},"request":{"host":%q}}]}`,
		v2, a.reg.Host(), v2, a.reg.Host())
	resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/hooks/registry", port), "application/vnd.docker.distribution.events.v1+json", strings.NewReader(hook))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("hook: %v %v", resp, err)
	}
	resp.Body.Close()
	a.waitApplied(v2)

	// Metrics are served and count what happened (recorded just after the
	// switch that waitApplied sees).
	var body string
	wants := []string{`berth_reconcile_total{result="applied",source="line-3"}`, `berth_applied_revision_info{digest="` + v2, "berth_registry_requests_total"}
	testenv.Eventually(t, 10*time.Second, func() bool {
		body = httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
		for _, want := range wants {
			if !strings.Contains(body, want) {
				return false
			}
		}
		return true
	}, "metrics lack one of %q:\n%s", wants, body)

	// reconcile --now with nothing new: unchanged.
	out := a.ok("reconcile", "--now", "line-3", "--config", a.cfgPath, "--output", "json")
	if !strings.Contains(out, `"unchanged"`) {
		t.Errorf("reconcile --now = %s", out)
	}

	// Rollback goes back to v1 (a downgrade, allowed explicitly) and
	// suspends the source.
	out = a.ok("rollback", "line-3", "--config", a.cfgPath)
	a.waitApplied(v1)
	if st := a.status(); !st.Sources[0].Suspended {
		t.Fatalf("rollback did not suspend the source: %s", out)
	}
	a.ok("resume", "line-3", "--config", a.cfgPath)
	a.ok("reconcile", "--now", "--config", a.cfgPath)
	a.waitApplied(v2)

	// Registry down: the applied revision stays, the error is reported,
	// and the agent recovers by itself on a following interval once the
	// registry is back.
	p.Stop()
	a.interval = "2s"
	a.writeConfig("ref: {tag: stable}", fmt.Sprintf("listen: 127.0.0.1:%d", port))
	p = a.startAgent()
	a.reg.Stop()
	testenv.Eventually(t, 30*time.Second, func() bool {
		l := a.status().Sources[0].Last
		return l != nil && l.Outcome == "error" && strings.Contains(l.Error, "connection refused")
	}, "the agent never reported the registry outage")
	if a.current() != v2 {
		t.Fatalf("registry outage changed current to %s", a.current())
	}
	a.reg.Start()
	v3 := a.publish("stable", a.key, 3)
	a.waitApplied(v3)

	// SIGTERM stops the agent cleanly and removes the socket.
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Errorf("agent exit code after SIGTERM = %d\n%s", code, p.Stderr())
	}
	if _, err := os.Stat(filepath.Join(a.stateDir, "berth.sock")); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	// Without an agent, status falls back to state.json.
	if st := a.status(); st.Sources[0].Applied == nil || st.Sources[0].Applied.Digest != v3 {
		t.Errorf("status from state.json = %+v", st)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func httpOK(url string) bool {
	resp, err := http.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = io.Copy(&b, resp.Body)
	return b.String()
}
