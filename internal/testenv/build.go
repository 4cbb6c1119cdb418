package testenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ModulePath is berth's Go module path; ModuleRoot looks for its go.mod.
const ModulePath = "github.com/berth-dev/berth"

// BerthBinEnv names an environment variable that may hold the path of a
// berth binary built beforehand (say by the Makefile, once for every test
// package). BuildBerth then returns it instead of building.
const BerthBinEnv = "BERTH_TEST_BIN"

// buildTimeout bounds one `go build` of the berth command.
const buildTimeout = 20 * time.Minute

var berthBuild struct {
	once sync.Once
	path string
	err  error
}

var buildDirs struct {
	mu   sync.Mutex
	dir  string
	done bool
}

// BuildBerth builds ./cmd/berth and ./cmd/berth-agent (which `berth agent`
// runs, found next to berth) once per test process and returns berth's
// path. Every later call, from any test, returns the same path (or
// fails the same way). The binary lives in a temp dir named after the test
// process; RemoveBuildDir removes it, and otherwise the next process that
// builds removes the dirs of processes that have exited.
//
// With BERTH_TEST_BIN set (BerthBinEnv), that binary is used instead.
func BuildBerth(t testing.TB) string {
	t.Helper()
	berthBuild.once.Do(func() {
		berthBuild.path, berthBuild.err = buildBerth()
	})
	if berthBuild.err != nil {
		t.Fatalf("testenv: build berth: %v", berthBuild.err)
	}
	if _, err := os.Stat(berthBuild.path); err != nil {
		t.Fatalf("testenv: the berth binary built for this process is gone: %v", err)
	}
	return berthBuild.path
}

func buildBerth() (string, error) {
	if p := os.Getenv(BerthBinEnv); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", err
		}
		st, err := os.Stat(abs)
		if err != nil {
			return "", fmt.Errorf("%s=%s: %w", BerthBinEnv, p, err)
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s=%s is not an executable file", BerthBinEnv, p)
		}
		return abs, nil
	}
	root, err := findModuleRoot(".")
	if err != nil {
		return "", err
	}
	dir, err := buildDir()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "berth"+exeSuffix())
	if err := goBuild(root, "./cmd/berth", out); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "berth-agent")); err == nil {
		if err := goBuild(root, "./cmd/berth-agent", filepath.Join(dir, "berth-agent"+exeSuffix())); err != nil {
			return "", err
		}
	}
	return out, nil
}

// BuildEnv is the environment berth's binaries are built with, as the
// Makefile and make dist build them: static, without cgo. Besides making
// a binary that runs FROM scratch, this keeps the Go-plugin loader that
// Helm's client brings (k8s.io/cli-runtime/pkg/resource imports
// kustomize's krusty, whose plugin loader imports package plugin) from
// costing anything: the linker keeps every method and exports every symbol
// of a program that links package plugin only when runtime/cgo is linked
// too (cmd/link: canUsePlugins), about 27 MB more binary and 35 MB more
// start-up RSS. cmd/berth links no applier and so no package plugin at all.
var BuildEnv = []string{"CGO_ENABLED=0"}

// goBuild runs `go build -o out pkg` in the module at root, with BuildEnv
// and env (KEY=VALUE) added to the environment.
func goBuild(root, pkg, out string, env ...string) error {
	gobin, err := goCommand()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, gobin, "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(append(os.Environ(), BuildEnv...), env...)
	var output bytes.Buffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	start := time.Now()
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("timed out after %s", buildTimeout)
		}
		return fmt.Errorf("go build -o %s %s (in %s) after %s: %v\n%s", out, pkg, root, time.Since(start).Round(time.Millisecond), err, output.String())
	}
	return nil
}

// goCommand finds the go command: on PATH (go test puts its GOROOT/bin
// first) or in the GOROOT the test was built with.
func goCommand() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go"+exeSuffix())
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return "", errors.New("the go command is neither on PATH nor in GOROOT/bin")
}

func exeSuffix() string {
	if runtime.GOOS == "windows" {
		return ".exe"
	}
	return ""
}

// ModuleRoot returns the root directory of the berth module: the nearest
// directory at or above the working directory whose go.mod declares
// ModulePath.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	root, err := findModuleRoot(".")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return root
}

func findModuleRoot(start string) (string, error) {
	dir, err := filepath.Abs(start)
	if err != nil {
		return "", err
	}
	for d := dir; ; {
		if data, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && modulePath(data) == ModulePath {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.mod of module %s at or above %s", ModulePath, dir)
		}
		d = parent
	}
}

// modulePath returns the path the module directive of a go.mod declares.
func modulePath(gomod []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.Index(line, "//"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		rest, ok := strings.CutPrefix(line, "module")
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '\t') {
			continue
		}
		rest = strings.TrimSpace(rest)
		if unq, err := strconv.Unquote(rest); err == nil {
			return unq
		}
		return rest
	}
	return ""
}

const buildDirPrefix = "berth-testenv-build-"

// buildDir returns this process's build dir, making it on first use after
// removing the build dirs of processes that no longer run.
func buildDir() (string, error) {
	buildDirs.mu.Lock()
	defer buildDirs.mu.Unlock()
	if buildDirs.done {
		return "", errors.New("testenv: build dir already removed (RemoveBuildDir)")
	}
	if buildDirs.dir != "" {
		return buildDirs.dir, nil
	}
	removeStaleBuildDirs(os.TempDir())
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", buildDirPrefix, os.Getpid()))
	if err != nil {
		return "", err
	}
	buildDirs.dir = dir
	return dir, nil
}

// removeStaleBuildDirs removes the build dirs in tmp whose process is gone.
func removeStaleBuildDirs(tmp string) {
	matches, _ := filepath.Glob(filepath.Join(tmp, buildDirPrefix+"*"))
	for _, m := range matches {
		rest := strings.TrimPrefix(filepath.Base(m), buildDirPrefix)
		pidText, _, ok := strings.Cut(rest, "-")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		_ = os.RemoveAll(m)
	}
}

// RemoveBuildDir removes the binary BuildBerth built. Call it from TestMain
// after m.Run; BuildBerth fails afterwards.
func RemoveBuildDir() {
	buildDirs.mu.Lock()
	defer buildDirs.mu.Unlock()
	if buildDirs.dir != "" {
		_ = os.RemoveAll(buildDirs.dir)
	}
	buildDirs.done = true
}
