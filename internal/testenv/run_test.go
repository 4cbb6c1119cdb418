package testenv

import (
	"fmt"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	bin := helperBinary(t)
	stdout, stderr, code := Run(t, bin, []string{helperEnv + "=echo", "HELPER_VALUE=first", "HELPER_VALUE=second", "HELPER_EXIT=3"}, "a b", "c")
	if code != 3 {
		t.Errorf("exit code = %d, want 3", code)
	}
	for _, want := range []string{`args=["a b" "c"]`, "HELPER_VALUE=second", `stdin=""`} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout %q lacks %q", stdout, want)
		}
	}
	if stderr != "to stderr\n" {
		t.Errorf("stderr = %q", stderr)
	}

	stdout, _, code = RunWith(t, RunOptions{Env: []string{helperEnv + "=echo"}, Stdin: "input", Dir: t.TempDir()}, bin)
	if code != 0 || !strings.Contains(stdout, `stdin="input"`) {
		t.Errorf("RunWith: exit %d, stdout %q", code, stdout)
	}
}

func TestRunTimeoutFails(t *testing.T) {
	ft := &fatalRecorder{TB: t}
	start := time.Now()
	runInGoroutine(func() {
		// Long enough for the helper to say ready on a loaded machine.
		RunWith(ft, RunOptions{Env: []string{helperEnv + "=sleep"}, Timeout: 5 * time.Second}, helperBinary(t))
	})
	if !strings.Contains(ft.msg, "timed out after 5s") || !strings.Contains(ft.msg, "ready") {
		t.Errorf("fatal message = %q", ft.msg)
	}
	if d := time.Since(start); d > 60*time.Second {
		t.Errorf("took %s", d)
	}
}

func TestStartProcess(t *testing.T) {
	p := StartProcess(t, RunOptions{Env: []string{helperEnv + "=sleep"}}, helperBinary(t))
	Eventually(t, 10*time.Second, func() bool { return p.Stdout() == "ready\n" }, "helper says ready; stdout %q", p.Stdout())
	select {
	case <-p.Done():
		t.Fatal("exited early")
	default:
	}
	if code := p.Stop(); code != -1 {
		t.Errorf("exit code after SIGTERM = %d, want -1 (signal)", code)
	}
	if code := p.ExitCode(); code != -1 {
		t.Errorf("ExitCode = %d", code)
	}

	p = StartProcess(t, RunOptions{Env: []string{helperEnv + "=echo", "HELPER_EXIT=7"}}, helperBinary(t))
	if code := p.Wait(10 * time.Second); code != 7 {
		t.Errorf("Wait = %d, want 7", code)
	}

	p = StartProcess(t, RunOptions{Env: []string{helperEnv + "=sleep"}}, helperBinary(t))
	Eventually(t, 10*time.Second, func() bool { return p.Stdout() != "" }, "helper says ready")
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := p.Wait(10 * time.Second); code != -1 {
		t.Errorf("Wait after SIGKILL = %d", code)
	}
}

func TestEventuallyFails(t *testing.T) {
	ft := &fatalRecorder{TB: t}
	runInGoroutine(func() { Eventually(ft, 100*time.Millisecond, func() bool { return false }, "thing %d", 42) })
	if !strings.Contains(ft.msg, "not within 100ms: thing 42") {
		t.Errorf("fatal message = %q", ft.msg)
	}
}

// fatalRecorder records Fatalf instead of failing the test; runInGoroutine
// runs the code under test in a goroutine so that Fatalf can end it.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// runInGoroutine runs f in a goroutine and waits for it to return or call
// runtime.Goexit.
func runInGoroutine(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}
