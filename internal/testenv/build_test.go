package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestModulePath(t *testing.T) {
	for gomod, want := range map[string]string{
		"module github.com/berth-dev/berth\n\ngo 1.26.8\n":          ModulePath,
		"// comment\nmodule \"example.com/q\" // trailing\n":        "example.com/q",
		"go 1.22\nmodule\texample.com/tab\n":                        "example.com/tab",
		"modulex example.com/no\n":                                  "",
		"require example.com/dep v1.0.0\n":                          "",
		"module example.com/a\nmodule example.com/second-ignored\n": "example.com/a",
	} {
		if got := modulePath([]byte(gomod)); got != want {
			t.Errorf("modulePath(%q) = %q, want %q", gomod, got, want)
		}
	}
}

func TestFindModuleRoot(t *testing.T) {
	root := t.TempDir()
	nested := filepath.Join(root, "hack", "k8s", "sub")
	if err := os.MkdirAll(nested, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module "+ModulePath+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "hack", "k8s", "go.mod"), []byte("module example.com/wrapper\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := findModuleRoot(nested)
	if err != nil || got != root {
		t.Errorf("findModuleRoot(%s) = %q, %v; want %s", nested, got, err, root)
	}
	if _, err := findModuleRoot(t.TempDir()); err == nil || !strings.Contains(err.Error(), ModulePath) {
		t.Errorf("outside the module: err = %v", err)
	}

	// This package sits two levels below the root of the real module.
	wd, _ := os.Getwd()
	if got, want := ModuleRoot(t), filepath.Dir(filepath.Dir(wd)); got != want {
		t.Errorf("ModuleRoot = %s, want %s", got, want)
	}
}

// fakeModule writes a module with a main package printing its arguments.
func fakeModule(t *testing.T, mainGo string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"go.mod":           "module example.com/fake\n\ngo 1.22\n",
		"cmd/fake/main.go": mainGo,
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const fakeMain = `package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Println("fake", os.Args[1:])
	os.Exit(len(os.Args) - 1)
}
`

func TestGoBuild(t *testing.T) {
	mod := fakeModule(t, fakeMain)
	out := filepath.Join(t.TempDir(), "fake")
	if err := goBuild(mod, "./cmd/fake", out); err != nil {
		t.Fatal(err)
	}
	stdout, _, code := Run(t, out, nil, "x", "y")
	if stdout != "fake [x y]\n" || code != 2 {
		t.Errorf("fake binary: %q, exit %d", stdout, code)
	}

	broken := fakeModule(t, "package main\n\nfunc main() { undefinedThing() }\n")
	err := goBuild(broken, "./cmd/fake", filepath.Join(t.TempDir(), "broken"))
	if err == nil || !strings.Contains(err.Error(), "undefined: undefinedThing") || !strings.Contains(err.Error(), "go build -o") {
		t.Errorf("broken build: err = %v", err)
	}
}

func TestBuildBerthPrebuilt(t *testing.T) {
	mod := fakeModule(t, fakeMain)
	bin := filepath.Join(t.TempDir(), "berth")
	if err := goBuild(mod, "./cmd/fake", bin); err != nil {
		t.Fatal(err)
	}
	t.Setenv(BerthBinEnv, bin)
	resetBerthBuild(t)
	if got := BuildBerth(t); got != bin {
		t.Fatalf("BuildBerth = %s, want %s", got, bin)
	}
	if got := BuildBerth(t); got != bin {
		t.Fatalf("second BuildBerth = %s", got)
	}
	if stdout, _, code := Run(t, BuildBerth(t), nil, "version"); stdout != "fake [version]\n" || code != 1 {
		t.Errorf("got %q, exit %d", stdout, code)
	}

	notExec := filepath.Join(t.TempDir(), "berth")
	if err := os.WriteFile(notExec, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(BerthBinEnv, notExec)
	if _, err := buildBerth(); err == nil || !strings.Contains(err.Error(), "not an executable") {
		t.Errorf("non-executable %s: err = %v", BerthBinEnv, err)
	}
	t.Setenv(BerthBinEnv, filepath.Join(t.TempDir(), "missing"))
	if _, err := buildBerth(); err == nil {
		t.Error("missing BERTH_TEST_BIN accepted")
	}
}

// resetBerthBuild forgets BuildBerth's result before and after the test.
func resetBerthBuild(t *testing.T) {
	reset := func() {
		berthBuild.once = sync.Once{}
		berthBuild.path, berthBuild.err = "", nil
	}
	reset()
	t.Cleanup(reset)
}

func TestRemoveStaleBuildDirs(t *testing.T) {
	tmp := t.TempDir()
	// A pid that existed and is gone: a child that has been waited for.
	cmd := exec.Command(helperBinary(t))
	cmd.Env = append(os.Environ(), helperEnv+"=echo")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := cmd.Process.Pid
	dirs := map[string]bool{ // name → kept
		buildDirPrefix + strconv.Itoa(dead) + "-123":        false,
		buildDirPrefix + strconv.Itoa(os.Getpid()) + "-456": true,
		buildDirPrefix + "1-789":                            true, // init is alive
		buildDirPrefix + "notapid-1":                        true,
		"unrelated-" + strconv.Itoa(dead) + "-1":            true,
	}
	for name := range dirs {
		if err := os.MkdirAll(filepath.Join(tmp, name, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	removeStaleBuildDirs(tmp)
	for name, kept := range dirs {
		_, err := os.Stat(filepath.Join(tmp, name))
		if kept != (err == nil) {
			t.Errorf("%s: kept = %v, want %v", name, err == nil, kept)
		}
	}
}

// TestBuildBerthBuilds runs the real build path against a stand-in module
// that declares berth's module path and has a cmd/berth.
func TestBuildBerthBuilds(t *testing.T) {
	t.Setenv(BerthBinEnv, "")
	mod := t.TempDir()
	for name, content := range map[string]string{
		"go.mod":            "module " + ModulePath + "\n\ngo 1.22\n",
		"cmd/berth/main.go": fakeMain,
		"internal/x/x.go":   "package x\n",
	} {
		p := filepath.Join(mod, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(filepath.Join(mod, "internal", "x"))
	bin, err := buildBerth()
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(bin) != "berth" || !strings.HasPrefix(filepath.Base(filepath.Dir(bin)), buildDirPrefix+strconv.Itoa(os.Getpid())+"-") {
		t.Errorf("built %s", bin)
	}
	if stdout, _, code := Run(t, bin, nil, "a"); stdout != "fake [a]\n" || code != 1 {
		t.Errorf("got %q, exit %d", stdout, code)
	}
}

// TestBerthLinksNoPlugin guards the footprint of the binaries as `go build`
// and `go install` make them, without any build tag: cmd/berth links no
// applier SDK (so the one-shot commands pay no Helm or Compose package
// initialisation) and no package plugin, with cgo or without; cmd/berth-agent
// built as BuildEnv says links no runtime/cgo, without which the linker
// ignores the package plugin that Helm's client brings.
func TestBerthLinksNoPlugin(t *testing.T) {
	gobin, err := goCommand()
	if err != nil {
		t.Fatal(err)
	}
	root := ModuleRoot(t)
	deps := func(pkg string, env ...string) map[string]bool {
		cmd := exec.Command(gobin, "list", "-deps", pkg)
		cmd.Dir = root
		cmd.Env = append(append(os.Environ(), "GOFLAGS="), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		set := map[string]bool{}
		for _, d := range strings.Fields(string(out)) {
			set[d] = true
		}
		if len(set) < 100 {
			t.Fatalf("go list -deps %s listed only %d packages:\n%s", pkg, len(set), out)
		}
		return set
	}
	for _, cgo := range []string{"CGO_ENABLED=1", "CGO_ENABLED=0"} {
		berth := deps("./cmd/berth", cgo)
		for d := range berth {
			// Helm's chart loader (reading charts at push) is light; its
			// client (action, kube) is what brings client-go and kustomize.
			if d == "plugin" || strings.HasPrefix(d, "helm.sh/helm/v3/pkg/action") || strings.HasPrefix(d, "helm.sh/helm/v3/pkg/kube") || strings.HasPrefix(d, "k8s.io/client-go/") ||
				strings.HasPrefix(d, "github.com/docker/compose/") || strings.HasPrefix(d, "sigs.k8s.io/kustomize/") ||
				strings.HasPrefix(d, ModulePath+"/apply/") {
				t.Errorf("cmd/berth (%s, no tags) links %s: applier code belongs to cmd/berth-agent; find the importer with `go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./cmd/berth`", cgo, d)
			}
		}
	}
	agent := deps("./cmd/berth-agent", BuildEnv...)
	if !agent["helm.sh/helm/v3/pkg/action"] || !agent["github.com/docker/compose/v5/pkg/compose"] {
		t.Error("cmd/berth-agent does not link both appliers")
	}
	if agent["runtime/cgo"] {
		t.Errorf("cmd/berth-agent built with %v links runtime/cgo: with package plugin (via Helm) in the link, the linker keeps every method", BuildEnv)
	}
	for tags, gone := range map[string]string{"berth_nohelm": "helm.sh/helm/v3/pkg/action", "berth_nocompose": "github.com/docker/compose/v5/pkg/compose"} {
		if deps("./cmd/berth-agent", append([]string{"GOFLAGS=-tags=" + tags}, BuildEnv...)...)[gone] {
			t.Errorf("cmd/berth-agent -tags %s still links %s", tags, gone)
		}
	}
}
