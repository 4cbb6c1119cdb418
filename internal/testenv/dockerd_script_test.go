package testenv

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests run test/scripts/dockerd.sh, which `make test` uses to get a
// Docker Engine. They never start a real second dockerd: with an engine
// running the script must reuse it, and the start/stop test puts a fake
// dockerd (this test binary) first on PATH.

func dockerdScript(t *testing.T) string {
	t.Helper()
	return filepath.Join(ModuleRoot(t), "test", "scripts", "dockerd.sh")
}

// fakeDockerdPath writes a "dockerd" that runs this test binary in the
// given helper mode, in a new dir, and returns a PATH that finds it first.
func fakeDockerdPath(t *testing.T, mode string) string {
	t.Helper()
	dir := t.TempDir()
	script := fmt.Sprintf("#!/bin/sh\n%s=%s exec %s \"$@\"\n", helperEnv, mode, strconv.Quote(helperBinary(t)))
	if err := os.WriteFile(filepath.Join(dir, "dockerd"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir + string(os.PathListSeparator) + os.Getenv("PATH")
}

// fakeDockerd stands in for dockerd: it checks the flags dockerd.sh passes,
// writes its pid file, and answers GET /_ping on the -H socket until
// SIGTERM. In mode "fake-dockerd-fail" it writes a few log lines and exits 1.
func fakeDockerd(mode string, args []string) int {
	flags := map[string]string{}
	for i := 0; i+1 < len(args); i += 2 {
		flags[args[i]] = args[i+1]
	}
	if f := os.Getenv("FAKE_DOCKERD_ARGS"); f != "" {
		_ = os.WriteFile(f, []byte(strings.Join(args, " ")), 0o644)
	}
	if mode == "fake-dockerd-fail" {
		for i := 1; i <= 50; i++ {
			fmt.Fprintf(os.Stderr, "fake dockerd log line %d\n", i)
		}
		fmt.Fprintln(os.Stderr, "failed to start daemon: fake failure")
		return 1
	}
	for _, f := range []string{"--config-file", "--data-root", "--exec-root", "-H", "--pidfile"} {
		if flags[f] == "" {
			fmt.Fprintf(os.Stderr, "fake dockerd: no %s in %q\n", f, args)
			return 2
		}
	}
	sock, ok := strings.CutPrefix(flags["-H"], "unix://")
	if !ok {
		fmt.Fprintf(os.Stderr, "fake dockerd: -H %s\n", flags["-H"])
		return 2
	}
	if err := os.WriteFile(flags["--pidfile"], []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		l.Close()
	}()
	fmt.Fprintln(os.Stderr, "fake dockerd: API listen on", sock)
	_ = http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_ping" {
			fmt.Fprint(w, "OK")
			return
		}
		http.NotFound(w, r)
	}))
	return 0
}

// TestDockerdScriptReusesEngine: with an engine answering on DOCKER_HOST,
// every command of the script uses it and starts nothing (a dockerd found
// on PATH would fail the test).
func TestDockerdScriptReusesEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Docker Engine")
	}
	d := Docker(t)
	run := t.TempDir()
	env := []string{
		"DOCKER_HOST=" + d.Host(),
		"PATH=" + fakeDockerdPath(t, "fake-dockerd-fail"),
		"BERTH_DOCKERD_RUN_DIR=" + filepath.Join(run, "run"),
		"BERTH_DOCKERD_DATA_ROOT=" + filepath.Join(run, "data"),
		"FAKE_DOCKERD_ARGS=" + filepath.Join(run, "args"),
	}
	script := dockerdScript(t)
	stdout, stderr, code := Run(t, "bash", env, script, "start")
	if code != 0 || stdout != "" || !strings.Contains(stderr, "using the running Docker Engine at "+d.Host()) {
		t.Errorf("start: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if stdout, _, code := Run(t, "bash", env, script, "host"); code != 0 || stdout != d.Host()+"\n" {
		t.Errorf("host: exit %d, %q", code, stdout)
	}
	if stdout, _, code := Run(t, "bash", env, script, "env"); code != 0 || stdout != "export DOCKER_HOST="+d.Host()+"\n" {
		t.Errorf("env: exit %d, %q", code, stdout)
	}
	if stdout, stderr, code := Run(t, "bash", env, script, "stop"); code != 0 || stdout != "" || !strings.Contains(stderr, "no dockerd started by this script") {
		t.Errorf("stop: exit %d, %q, %q", code, stdout, stderr)
	}
	for _, p := range []string{filepath.Join(run, "args"), filepath.Join(run, "run")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s exists: the script did more than reuse the engine", p)
		}
	}
	// The engine still answers.
	Docker(t)
}

// TestDockerdScriptStartStop starts, reuses and stops a (fake) dockerd the
// way `make test` starts the real one on a machine without an engine.
func TestDockerdScriptStartStop(t *testing.T) {
	if testing.Short() {
		t.Skip("runs test/scripts/dockerd.sh")
	}
	tmp := t.TempDir()
	runDir := filepath.Join(tmp, "run")
	own := "unix://" + filepath.Join(runDir, "docker.sock")
	env := []string{
		"DOCKER_HOST=unix://" + filepath.Join(tmp, "nothing-here.sock"),
		"PATH=" + fakeDockerdPath(t, "fake-dockerd"),
		"BERTH_DOCKERD_RUN_DIR=" + runDir,
		"BERTH_DOCKERD_DATA_ROOT=" + filepath.Join(tmp, "data"),
		"FAKE_DOCKERD_ARGS=" + filepath.Join(tmp, "args"),
	}
	script := dockerdScript(t)
	if _, err := connectDocker(DefaultDockerHost); err == nil {
		// A system engine answers: the script must take it.
		_, stderr, code := Run(t, "bash", env, script, "start")
		if code != 0 || !strings.Contains(stderr, "using the running Docker Engine at "+DefaultDockerHost) {
			t.Errorf("start with a system engine: exit %d, %q", code, stderr)
		}
		return
	}
	if os.Geteuid() != 0 {
		_, stderr, code := Run(t, "bash", env, script, "start")
		if code != 1 || !strings.Contains(stderr, "not root, so not starting one") || !strings.Contains(stderr, "sudo make test") {
			t.Errorf("start as non-root: exit %d, %q", code, stderr)
		}
		return
	}
	t.Cleanup(func() {
		Run(t, "bash", env, script, "stop")
		if data, err := os.ReadFile(filepath.Join(runDir, "docker.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && processAlive(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})

	// No engine anywhere: "host" says so.
	if stdout, stderr, code := Run(t, "bash", env, script, "host"); code != 1 || stdout != "" || !strings.Contains(stderr, "no Docker Engine answers") {
		t.Errorf("host without an engine: exit %d, %q, %q", code, stdout, stderr)
	}

	// A dockerd that exits: start shows its last 40 log lines, exits 1.
	failEnv := []string{
		env[0],
		"PATH=" + fakeDockerdPath(t, "fake-dockerd-fail"),
		"BERTH_DOCKERD_RUN_DIR=" + filepath.Join(tmp, "fail-run"),
		"BERTH_DOCKERD_DATA_ROOT=" + filepath.Join(tmp, "fail-data"),
	}
	_, stderr, code := Run(t, "bash", failEnv, script, "start")
	if code != 1 || !strings.Contains(stderr, "dockerd exited before answering") ||
		!strings.Contains(stderr, "failed to start daemon: fake failure") ||
		!strings.Contains(stderr, "fake dockerd log line 12\n") || strings.Contains(stderr, "fake dockerd log line 11\n") {
		t.Errorf("start with a failing dockerd: exit %d, stderr %q", code, stderr)
	}

	_, stderr, code = Run(t, "bash", env, script, "start")
	if code != 0 || !strings.Contains(stderr, "starting ") || !strings.Contains(stderr, "answers at "+own) {
		t.Fatalf("start: exit %d, %q", code, stderr)
	}
	args := readFile(t, filepath.Join(tmp, "args"))
	for _, want := range []string{
		"--data-root " + filepath.Join(tmp, "data"),
		"--exec-root " + filepath.Join(runDir, "docker"),
		"-H " + own,
		"--pidfile " + filepath.Join(runDir, "docker.pid"),
		"--config-file " + filepath.Join(runDir, "daemon.json"),
	} {
		if !strings.Contains(args, want) {
			t.Errorf("dockerd args %q lack %q", args, want)
		}
	}
	if log := readFile(t, filepath.Join(runDir, "dockerd.log")); !strings.Contains(log, "fake dockerd: API listen on") {
		t.Errorf("dockerd.log = %q", log)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(readFile(t, filepath.Join(runDir, "docker.pid"))))
	if err != nil || !processAlive(pid) {
		t.Fatalf("pid file: %v", err)
	}

	// Idempotent: a second start, host and env use the running one.
	if _, stderr, code := Run(t, "bash", env, script, "start"); code != 0 || !strings.Contains(stderr, "using the running Docker Engine at "+own) {
		t.Errorf("second start: exit %d, %q", code, stderr)
	}
	if stdout, _, code := Run(t, "bash", env, script, "host"); code != 0 || stdout != own+"\n" {
		t.Errorf("host: exit %d, %q", code, stdout)
	}
	if stdout, _, code := Run(t, "bash", env, script, "env"); code != 0 || stdout != "export DOCKER_HOST="+own+"\n" {
		t.Errorf("env: exit %d, %q", code, stdout)
	}

	if _, stderr, code := Run(t, "bash", env, script, "stop"); code != 0 || !strings.Contains(stderr, "stopping dockerd (pid "+strconv.Itoa(pid)+")") {
		t.Errorf("stop: exit %d, %q", code, stderr)
	}
	Eventually(t, 10*time.Second, func() bool { return !processAlive(pid) }, "fake dockerd %d still runs after stop", pid)
	if _, stderr, code := Run(t, "bash", env, script, "stop"); code != 0 || !strings.Contains(stderr, "no dockerd started by this script") {
		t.Errorf("second stop: exit %d, %q", code, stderr)
	}
}

// TestDockerdScriptKeepsItsEngine: once the script has started its dockerd,
// it keeps using it even when a system engine answers on
// /var/run/docker.sock later (issue 14, point 3: the next run switched to
// the system engine, without the images and containers of the first).
func TestDockerdScriptKeepsItsEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("runs test/scripts/dockerd.sh")
	}
	if os.Geteuid() != 0 {
		t.Skip("the script starts dockerd only as root")
	}
	tmp := t.TempDir()
	runDir := filepath.Join(tmp, "run")
	own := "unix://" + filepath.Join(runDir, "docker.sock")
	sysSock := filepath.Join(tmp, "system.sock")
	env := []string{
		"DOCKER_HOST=",
		"BERTH_DOCKERD_SYSTEM_HOST=unix://" + sysSock,
		"PATH=" + fakeDockerdPath(t, "fake-dockerd"),
		"BERTH_DOCKERD_RUN_DIR=" + runDir,
		"BERTH_DOCKERD_DATA_ROOT=" + filepath.Join(tmp, "data"),
	}
	script := dockerdScript(t)
	t.Cleanup(func() { Run(t, "bash", env, script, "stop") })
	if _, stderr, code := Run(t, "bash", env, script, "start"); code != 0 || !strings.Contains(stderr, "answers at "+own) {
		t.Fatalf("start without any engine: exit %d, %q", code, stderr)
	}
	// A system engine appears.
	l, err := net.Listen("unix", sysSock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "OK") })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	if stdout, _, code := Run(t, "bash", env, script, "host"); code != 0 || stdout != own+"\n" {
		t.Errorf("host with our dockerd and a system engine: exit %d, %q, want %s", code, stdout, own)
	}
	if _, stderr, code := Run(t, "bash", env, script, "start"); code != 0 || !strings.Contains(stderr, "using the running Docker Engine at "+own) {
		t.Errorf("second start: exit %d, %q", code, stderr)
	}
	// Ours stopped: the system engine is next.
	if _, stderr, code := Run(t, "bash", env, script, "stop"); code != 0 || !strings.Contains(stderr, "stopped") {
		t.Fatalf("stop: exit %d, %q", code, stderr)
	}
	if stdout, _, code := Run(t, "bash", env, script, "host"); code != 0 || stdout != "unix://"+sysSock+"\n" {
		t.Errorf("host after stop: exit %d, %q, want the system engine", code, stdout)
	}
}
