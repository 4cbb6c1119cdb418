package testenv

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// What Registry, Prometheus and Kube share: a server binary from a Debian
// package (or a cache), run in its own process group with its output
// appended to a log file in a test temp dir, polled until it is ready,
// stopped when the test ends.

// errAddrInUse marks a server that could not bind its port: the caller
// tries another one, or waits for the port to come free.
var errAddrInUse = errors.New("address already in use")

// serverPoll is how often a starting server is asked whether it is ready.
const serverPoll = 50 * time.Millisecond

// serverLogLines is how many lines of a server's log a failure shows.
const serverLogLines = 40

// server is one server process that can be stopped and started again on
// the same port, with the same files: the life cycle of Registry and
// Prometheus. newServer makes it; its owner sets args, probe, client and
// readyTimeout, then calls startOnFreePort.
type server struct {
	t       testing.TB
	name    string // the binary's name, as on PATH and in messages
	bin     string
	dir     string // the server's test temp dir
	logFile string // its output, appended to across restarts
	ip      string
	port    int

	// args is the command line after bin for the current port.
	args func() []string
	// probe returns nil once the server is ready.
	probe func(*http.Client) error
	// readyWhat says what probe checks, for messages: "answering GET /v2/".
	readyWhat string
	// client is the HTTP client probe is given (its timeout is set to 2s).
	client       func() *http.Client
	readyTimeout time.Duration
	// stopGrace is how long Stop waits after SIGTERM before it kills the
	// server; zero kills it at once.
	stopGrace time.Duration

	mu     sync.Mutex
	proc   *serverProc // nil while stopped
	starts int
}

// newServer finds the binary name (on PATH, else at fallback), failing the
// test with how to install the Debian package pkg when there is none, and
// makes the server's temp dir, whose logName file gets its output.
func newServer(t testing.TB, name, pkg, fallback, logName string) *server {
	t.Helper()
	bin := findBinary(name, fallback)
	if bin == "" {
		t.Fatalf("%s not found: run `make test` (installs it as root) or `sudo apt-get install -y %s`", name, pkg)
	}
	dir := t.TempDir()
	return &server{t: t, name: name, bin: bin, dir: dir, logFile: filepath.Join(dir, logName), ip: "127.0.0.1"}
}

// host is "IP:PORT".
func (s *server) host() string { return net.JoinHostPort(s.ip, strconv.Itoa(s.port)) }

// startOnFreePort starts the server on a free port of s.ip and waits until
// it is ready; onPort (if not nil) runs first for every port tried. A port
// found free can be taken before the server binds it: another one is
// tried then. The server is stopped when the test ends, and its log shown
// if the test failed.
func (s *server) startOnFreePort(onPort func() error) {
	s.t.Helper()
	s.t.Cleanup(func() {
		s.stop()
		if s.t.Failed() {
			s.t.Logf("%s %s log (last lines of %s):\n%s", s.name, s.host(), s.logFile, fileTail(s.logFile, serverLogLines))
		}
	})
	const attempts = 5
	for i := 1; ; i++ {
		port, err := freePortOn(s.ip)
		if err != nil {
			s.t.Fatalf("testenv: find a free port: %v", err)
		}
		s.port = port
		if onPort != nil {
			if err := onPort(); err != nil {
				s.t.Fatalf("testenv: %v", err)
			}
		}
		err = s.start()
		if err == nil {
			return
		}
		if !errors.Is(err, errAddrInUse) || i == attempts {
			s.t.Fatalf("testenv: start %s on %s: %v", s.name, s.host(), err)
		}
	}
}

// restart starts a stopped server again on the same port and waits until
// it is ready. If something took the port meanwhile, it gives it up to 10
// seconds to go away. It fails the test if the server is running.
func (s *server) restart() {
	s.t.Helper()
	if s.running() {
		s.t.Fatalf("testenv: %s %s is already running", s.name, s.host())
	}
	var err error
	for range 40 {
		if err = s.start(); err == nil || !errors.Is(err, errAddrInUse) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("testenv: restart %s on %s: %v", s.name, s.host(), err)
	}
}

func (s *server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil
}

// start runs the server and waits until it is ready.
func (s *server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return fmt.Errorf("%s %s is already running", s.name, s.host())
	}
	s.starts++
	header := fmt.Sprintf("start %d of %s on %s at %s", s.starts, s.name, s.host(), time.Now().UTC().Format(time.RFC3339Nano))
	proc, err := launch(s.name, s.dir, s.logFile, header, s.bin, s.args()...)
	if err != nil {
		return err
	}
	s.proc = proc
	client := s.client()
	client.Timeout = 2 * time.Second
	err = proc.waitReady(s.readyWhat, s.readyTimeout, func() error { return s.probe(client) })
	if err != nil {
		proc.stop(0)
		s.proc = nil
	}
	return err
}

// stop ends the server and waits for it. Stopping a stopped server does
// nothing.
func (s *server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.stop(s.stopGrace)
		s.proc = nil
	}
}

// serverProc is one running server process, started by launch.
type serverProc struct {
	name     string
	logFile  string
	logStart int64 // where this run's output begins in logFile
	cmd      *exec.Cmd
	done     chan struct{} // closed when cmd has exited
	err      error         // cmd.Wait's, once done is closed
}

// launch starts bin with args in dir, in a process group of its own, with
// only PATH, HOME=dir and TMPDIR in its environment (no variable of the
// test's can change the configuration under test), its output appended to
// logFile after the line "# testenv: " + header.
func launch(name, dir, logFile, header, bin string, args ...string) (*serverProc, error) {
	logf, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	fmt.Fprintf(logf, "# testenv: %s\n", header)
	logStart, _ := logf.Seek(0, io.SeekEnd)
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TMPDIR=" + os.TempDir()}
	setProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &serverProc{name: name, logFile: logFile, logStart: logStart, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// waitReady polls ready until it returns nil, the process exits or timeout
// passes; what says what ready checks. An exit because the port was taken
// is errAddrInUse. The errors show the process's output of this run.
func (p *serverProc) waitReady(what string, timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.done:
			out := p.output()
			if strings.Contains(out, "address already in use") {
				return fmt.Errorf("%w: %s exited: %v\noutput of %s (%s):\n%s", errAddrInUse, p.name, p.err, p.name, p.logFile, out)
			}
			return fmt.Errorf("%s exited before %s: %v\noutput of %s (%s):\n%s", p.name, what, p.err, p.name, p.logFile, out)
		default:
		}
		err := ready()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not %s within %s: %v\noutput of %s (%s):\n%s", p.name, what, timeout, err, p.name, p.logFile, p.output())
		}
		time.Sleep(serverPoll)
	}
}

// output is the last lines of what the process wrote.
func (p *serverProc) output() string {
	data, err := os.ReadFile(p.logFile)
	if err != nil || int64(len(data)) < p.logStart {
		return ""
	}
	return lastLines(string(data[p.logStart:]), serverLogLines)
}

// stop sends SIGTERM to the process group and kills it after grace (at
// once when grace is zero), and waits for the process to exit.
func (p *serverProc) stop(grace time.Duration) {
	if grace <= 0 {
		_ = killProcessGroup(p.cmd)
		<-p.done
		return
	}
	_ = signalProcessGroup(p.cmd, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = killProcessGroup(p.cmd)
		<-p.done
	}
}

// getOK GETs url and returns nil when the answer has one of the statuses
// ok.
func getOK(c *http.Client, url string, ok ...int) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	for _, code := range ok {
		if resp.StatusCode == code {
			return nil
		}
	}
	return fmt.Errorf("GET %s: %s", url, resp.Status)
}

// findBinary returns name's path on PATH, else fallback when that is an
// executable file, else "".
func findBinary(name, fallback string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if isExecutable(fallback) {
		return fallback
	}
	return ""
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// fileTail returns the last n lines of a file.
func fileTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	return lastLines(string(data), n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines left out)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// freePort returns a port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) { return freePortOn("127.0.0.1") }

// freePortOn returns a port of ip that was free a moment ago.
func freePortOn(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
