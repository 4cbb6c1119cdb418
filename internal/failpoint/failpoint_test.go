package failpoint

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestHitIsInertWithoutTag: in a normal build an armed failpoint does
// nothing.
func TestHitIsInertWithoutTag(t *testing.T) {
	if enabled {
		t.Skip("built with berth_failpoint")
	}
	t.Setenv(Env, "x:1")
	Hit("x")
	Hit("x")
}

// TestHelperHit is not a test: the child of TestHitKills.
func TestHelperHit(t *testing.T) {
	if os.Getenv("BERTH_FAILPOINT_HELPER") == "" {
		t.Skip("helper process")
	}
	for range 3 {
		Hit("other")
		Hit("x")
		os.Stdout.WriteString("passed\n")
	}
	os.Exit(0)
}

// TestHitKills: built with the tag, the N-th hit of the armed point kills
// the process with SIGKILL.
func TestHitKills(t *testing.T) {
	if !enabled {
		t.Skip("needs -tags berth_failpoint")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHit$", "-test.count=1")
	cmd.Env = append(os.Environ(), "BERTH_FAILPOINT_HELPER=1", Env+"=x:2")
	out, err := cmd.Output()
	if err == nil || cmd.ProcessState.String() != "signal: killed" {
		t.Fatalf("helper ended with %v (%s), want killed", err, cmd.ProcessState)
	}
	if got := strings.Count(string(out), "passed"); got != 1 {
		t.Errorf("passed the point %d times before the kill, want 1", got)
	}
}
