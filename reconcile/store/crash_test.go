package store

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// crashHelperEnv names the state folder the helper process writes to.
const crashHelperEnv = "BERTH_STORE_CRASH_HELPER_DIR"

// crashState is the n-th state the helper writes. Its size varies with n, so
// that a torn or mixed write cannot parse as another valid state.
func crashState(n int) *State {
	st := &State{}
	ss := st.Source("app")
	ss.Failures = n
	ss.FailedDigest = dg(strconv.Itoa(n))
	for i := range n%17 + 1 {
		ss.History = append(ss.History, Revision{
			Digest:      dg(fmt.Sprint(n, "/", i)),
			Outcome:     OutcomeApplied,
			Annotations: map[string]string{"n": strconv.Itoa(n), "pad": strings.Repeat("x", (n*37+i*101)%900)},
			Time:        time.Unix(int64(n), 0).UTC(),
		})
	}
	return st
}

// TestHelperWriteStateLoop is not a test: run by TestWriteStateCrash in a
// child process, it writes crashState(1), crashState(2)... until killed.
func TestHelperWriteStateLoop(t *testing.T) {
	dir := os.Getenv(crashHelperEnv)
	if dir == "" {
		t.Skip("helper process for TestWriteStateCrash")
	}
	start, _ := strconv.Atoi(os.Getenv(crashHelperEnv + "_START"))
	for n := start; ; n++ {
		if err := WriteState(dir, crashState(n)); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(3)
		}
		if n == start {
			fmt.Println("writing") // the parent may kill from now on
		}
	}
}

// startHelper runs the helper test name of this test binary in a child
// process, with env added to its environment, and returns once the helper
// prints ready: from then on the caller may kill it. Its standard error
// goes to stderr. It fails the test if the helper prints anything else
// first, or nothing within 30 seconds.
func startHelper(t *testing.T, name, ready string, env ...string) (cmd *exec.Cmd, stderr *strings.Builder) {
	t.Helper()
	cmd = exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr = &strings.Builder{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		started <- strings.TrimSpace(line) == ready
	}()
	select {
	case ok := <-started:
		if !ok {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("helper did not start %s: %s", ready, stderr.String())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("helper did not start in time")
	}
	return cmd, stderr
}

// TestWriteStateCrash kills a process writing state.json in a loop at random
// moments: every time, state.json must read back as one complete state that
// was written, never a partial file, and Open must clear the temporary
// files the kills leave.
func TestWriteStateCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("kills processes in a loop")
	}
	dir := t.TempDir()
	if err := WriteState(dir, crashState(0)); err != nil {
		t.Fatal(err)
	}
	last, torn := 0, 0
	rounds := 25
	deadline := time.Now().Add(15 * time.Second)
	for round := 0; round < rounds && time.Now().Before(deadline); round++ {
		// Wait until it writes, then kill it after a random delay.
		cmd, stderr := startHelper(t, "TestHelperWriteStateLoop", "writing",
			crashHelperEnv+"="+dir, fmt.Sprintf("%s_START=%d", crashHelperEnv, last+1))
		time.Sleep(time.Duration(rand.IntN(40_000)) * time.Microsecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("helper ended with %v, not by SIGKILL: %s", err, stderr.String())
		}

		st, err := ReadState(dir)
		if err != nil {
			t.Fatalf("round %d: ReadState after kill: %v", round, err)
		}
		n := st.Source("app").Failures
		got, _ := json.Marshal(st)
		want, _ := json.Marshal(crashState(n))
		if string(got) != string(want) {
			t.Fatalf("round %d: state.json is not a state that was written (n=%d):\n%s", round, n, got)
		}
		if n < last {
			t.Fatalf("round %d: state went back from write %d to %d", round, last, n)
		}
		tmps, _ := filepath.Glob(filepath.Join(dir, "."+StateFile+".tmp-*"))
		if len(tmps) > 0 {
			torn++
		}
		t.Logf("round %d: killed after write %d, %d temporary files left", round, n, len(tmps))
		last = n

		// Open clears what the kill left.
		if _, err := Open(dir); err != nil {
			t.Fatal(err)
		}
		if tmps, _ := filepath.Glob(filepath.Join(dir, "."+StateFile+".tmp-*")); len(tmps) > 0 {
			t.Fatalf("temporary files survive Open: %v", tmps)
		}
	}
	if last == 0 {
		t.Error("the helper never completed a write")
	}
	t.Logf("%d kills interrupted a write in progress", torn)
}
