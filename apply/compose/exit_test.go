package compose

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestExitedAtStartFails: a container that exits non-zero while the app
// starts fails the apply at once (Margo's Compose wait: "any container
// exiting non-zero during start-up is reported failed"), without waiting
// for the timeout, and a first apply that fails is brought down.
func TestExitedAtStartFails(t *testing.T) {
	f := newFixture(t)
	f.a.opts.WaitTimeout = 2 * time.Minute
	src := source("exits")
	// The hello binary run as "healthcheck" finds no server and exits 1.
	// The health check (never run: its interval is longer than the test)
	// keeps the container "starting" until it exits, so that the wait
	// sees the exit: without one, a container that is running for the
	// few milliseconds before it exits can pass the wait first.
	compose := "services:\n  web:\n    image: " + imageV1 + "\n    command: [\"healthcheck\"]\n    restart: \"no\"\n" +
		"    healthcheck:\n      test: [\"CMD\", \"/hello\", \"healthcheck\"]\n      interval: 10m\n"
	rev := revision(t, src, "v1", stateYAML("web"), map[string]string{"apps/web/compose.yaml": compose})
	start := time.Now()
	sts, err := f.a.Apply(context.Background(), rev, nil)
	if err == nil || !strings.Contains(err.Error(), "exit code 1") {
		t.Fatalf("err = %v, want the container's exit code 1", err)
	}
	if d := time.Since(start); d > time.Minute {
		t.Errorf("took %s: an exited container must fail the wait at once", d)
	}
	if st := statusOf(t, sts, "web"); st.Outcome != OutcomeFailed {
		t.Errorf("status %+v", st)
	}
}
