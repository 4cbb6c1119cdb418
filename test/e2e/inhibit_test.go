package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

type inhibitorList struct {
	Inhibitors []struct {
		App, Reason, By string
		Until           time.Time
	}
	Problems []struct{ File, Error string }
}

// TestInhibit sets, lists and releases inhibitors with the berth binary:
// through a running agent's socket (whose configuration carries the new
// device and windows fields), and by writing the files when no agent
// runs; a file written by hand, as a container would, is listed too.
func TestInhibit(t *testing.T) {
	a := newAgentEnv(t)
	v1 := a.publish("stable", a.key, 1)
	// An apply window open now (from an hour ago to two hours ahead, every
	// day, crossing midnight when it must): the agent holds updates outside
	// its windows, and this test is about inhibitors.
	now := time.Now().UTC()
	a.writeConfig("ref: {tag: stable}", fmt.Sprintf(`device:
  id: press-07
  labels: {ring: canary, line: "3"}
windows:
  apply:
    - {days: [mon, tue, wed, thu, fri, sat, sun], start: "%s", end: "%s", timezone: UTC}
  download: always`, now.Add(-time.Hour).Format("15:04"), now.Add(2*time.Hour).Format("15:04")))
	run := func(args ...string) (string, string) {
		t.Helper()
		out, errOut, code := testenv.Run(t, a.bin, nil, append(args, "--config", a.cfgPath)...)
		if code != 0 {
			t.Fatalf("berth %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
		}
		return out, errOut
	}
	list := func() inhibitorList {
		t.Helper()
		out, _ := run("inhibit", "--output", "json")
		var l inhibitorList
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatalf("inhibit list: %v\n%s", err, out)
		}
		return l
	}
	if _, errOut, code := testenv.Run(t, a.bin, nil, "agent", "--config", a.cfgPath, "--check-config"); code != 0 {
		t.Fatalf("--check-config of a configuration with device and windows: %s", errOut)
	}

	p := a.startAgent()
	a.waitApplied(v1)
	_, errOut := run("inhibit", "press", "--for", "30m", "--reason", "batch 4711 running")
	if strings.Contains(errOut, "no agent") {
		t.Errorf("the CLI did not reach the running agent: %s", errOut)
	}
	file := filepath.Join(a.stateDir, "inhibit", "press.json")
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("the agent wrote no inhibitor file: %v", err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return strings.Contains(p.Stderr(), "inhibitor set") }, "the agent did not log the inhibitor")
	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if err := os.WriteFile(filepath.Join(a.stateDir, "inhibit", "web.json"), []byte(`{"until":"`+until+`","reason":"draining","by":"container"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	l := list()
	if len(l.Inhibitors) != 2 || l.Inhibitors[0].App != "press" || l.Inhibitors[0].Reason != "batch 4711 running" ||
		!strings.HasPrefix(l.Inhibitors[0].By, "berth inhibit") || l.Inhibitors[1].By != "container" {
		t.Fatalf("inhibitors through the agent: %+v", l)
	}
	if _, _, code := testenv.Run(t, a.bin, nil, "inhibit", "Press", "--for", "1m", "--config", a.cfgPath); code == 0 {
		t.Error("an invalid app name was accepted")
	}
	out, _ := run("inhibit", "--release", "press")
	if !strings.Contains(out, "press: inhibitor released") {
		t.Errorf("release: %q", out)
	}
	p.Stop()

	// No agent: the CLI writes and removes the files itself.
	_, errOut = run("inhibit", "press", "--for", "10m")
	if !strings.Contains(errOut, "no agent is running") {
		t.Errorf("no warning without an agent: %s", errOut)
	}
	if l := list(); len(l.Inhibitors) != 2 {
		t.Errorf("inhibitors from the files: %+v", l)
	}
	out, _ = run("inhibit", "--release", "web")
	if !strings.Contains(out, "web: inhibitor released") {
		t.Errorf("release without agent: %q", out)
	}
	if out, _ := run("inhibit", "--release", "web"); !strings.Contains(out, "no inhibitor to release") {
		t.Errorf("second release: %q", out)
	}
	if msg := a.fail("inhibit", "press", "--config", a.cfgPath); !strings.Contains(msg, "--for") {
		t.Errorf("inhibit without --for: %q", msg)
	}
}
