package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultRunTimeout is how long Run lets a command run.
const DefaultRunTimeout = 2 * time.Minute

// RunOptions are the options of RunWith and StartProcess.
type RunOptions struct {
	// Env is added to the test process's environment; an entry wins over
	// an inherited one with the same name, and a later entry over an
	// earlier one.
	Env []string
	// Dir is the working directory; "" is the test's.
	Dir string
	// Stdin is the command's standard input; empty means none.
	Stdin string
	// Timeout bounds RunWith; 0 means DefaultRunTimeout. A command still
	// running then is killed (with its process group) and fails the test.
	// StartProcess ignores it.
	Timeout time.Duration
}

// Run runs bin with args and env (see RunOptions.Env) and returns what it
// wrote and its exit code. A command that cannot start, or that runs longer
// than DefaultRunTimeout, fails the test.
func Run(t testing.TB, bin string, env []string, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	return RunWith(t, RunOptions{Env: env}, bin, args...)
}

// RunWith is Run with options.
func RunWith(t testing.TB, opts RunOptions, bin string, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultRunTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, bin, args...)
	setupCmd(cmd, opts)
	cmd.Cancel = func() error { return killProcessGroup(cmd) }
	cmd.WaitDelay = 5 * time.Second
	var outBuf, errBuf bytes.Buffer
	cmd.Stdout = &outBuf
	cmd.Stderr = &errBuf

	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start).Round(time.Millisecond)
	stdout, stderr = outBuf.String(), errBuf.String()
	cmdline := commandLine(bin, args)

	if ctx.Err() == context.DeadlineExceeded {
		t.Fatalf("testenv: %s timed out after %s\nstdout:\n%s\nstderr:\n%s", cmdline, timeout, clip(stdout), clip(stderr))
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		exitCode = 0
	case errors.As(err, &exitErr):
		exitCode = exitErr.ExitCode()
	default:
		t.Fatalf("testenv: run %s: %v", cmdline, err)
	}
	t.Logf("$ %s  (exit %d, %s)\nstdout:\n%s\nstderr:\n%s", cmdline, exitCode, elapsed, clip(stdout), clip(stderr))
	return stdout, stderr, exitCode
}

func setupCmd(cmd *exec.Cmd, opts RunOptions) {
	cmd.Env = append(os.Environ(), opts.Env...)
	cmd.Dir = opts.Dir
	if opts.Stdin != "" {
		cmd.Stdin = strings.NewReader(opts.Stdin)
	}
	setProcessGroup(cmd)
}

// Process is a command started in the background by StartProcess.
type Process struct {
	t       testing.TB
	cmd     *exec.Cmd
	cmdline string
	stdout  syncBuffer
	stderr  syncBuffer
	done    chan struct{}
	err     error // cmd.Wait's result, set before done is closed
}

// StartProcess starts bin with args in the background, for commands that
// run until stopped (berth agent). It is stopped, with its process group,
// when the test ends if it still runs; its output is logged then.
func StartProcess(t testing.TB, opts RunOptions, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{t: t, cmdline: commandLine(bin, args), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	setupCmd(p.cmd, opts)
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("testenv: start %s: %v", p.cmdline, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		code := p.Stop()
		t.Logf("$ %s  (background, exit %d)\nstdout:\n%s\nstderr:\n%s", p.cmdline, code, clip(p.Stdout()), clip(p.Stderr()))
	})
	return p
}

// Pid is the process's id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Stdout is what the process has written to its standard output so far.
func (p *Process) Stdout() string { return p.stdout.String() }

// Stderr is what the process has written to its standard error so far.
func (p *Process) Stderr() string { return p.stderr.String() }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Signal sends sig to the process (not its group).
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits up to timeout for the process to exit by itself and returns
// its exit code; it fails the test if the process still runs then.
func (p *Process) Wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.exitCode()
	case <-time.After(timeout):
		p.t.Fatalf("testenv: %s still runs after %s\nstderr:\n%s", p.cmdline, timeout, clip(p.Stderr()))
		return -1
	}
}

// Stop sends SIGTERM to the process group, waits up to 10 seconds, then
// kills it, and returns the exit code (-1 when ended by a signal). Stopping
// an exited process just returns its exit code.
func (p *Process) Stop() int {
	select {
	case <-p.done:
		return p.exitCode()
	default:
	}
	_ = signalProcessGroup(p.cmd, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = killProcessGroup(p.cmd)
		<-p.done
	}
	return p.exitCode()
}

// ExitCode returns the exit code of an exited process, -1 for one ended by
// a signal, and fails the test if it still runs.
func (p *Process) ExitCode() int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.exitCode()
	default:
		p.t.Fatalf("testenv: %s still runs", p.cmdline)
		return -1
	}
}

func (p *Process) exitCode() int {
	var exitErr *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &exitErr):
		return exitErr.ExitCode()
	default:
		return -1
	}
}

// Eventually polls cond every 50ms until it returns true, and fails the test
// with the message if that does not happen within timeout.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("testenv: not within %s: %s", timeout, fmt.Sprintf(format, args...))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func commandLine(bin string, args []string) string {
	parts := append([]string{bin}, args...)
	for i, a := range parts {
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\$") {
			parts[i] = fmt.Sprintf("%q", a)
		}
	}
	return strings.Join(parts, " ")
}

// clip shortens long output for logs and failure messages.
func clip(s string) string {
	const max = 16 << 10
	if len(s) <= max {
		return s
	}
	return s[:max/2] + fmt.Sprintf("\n... (%d bytes left out) ...\n", len(s)-max) + s[len(s)-max/2:]
}
