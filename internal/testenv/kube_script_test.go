package testenv

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// fakeGo stands in for the go command in kube-apiserver.sh: it answers
// `mod download -json` with a go.mod of k8s.io/kubernetes, `list -deps`
// with 30 packages, and `build -v` by naming 30 packages over about 3
// seconds before writing the -o file.
const fakeGo = `#!/bin/sh
case "$1" in
mod)
  printf 'replace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n)\n' >"$FAKE_GO_DIR/k8s.mod"
  printf '{\n\t"GoMod": "%s",\n}\n' "$FAKE_GO_DIR/k8s.mod" ;;
list) i=0; while [ $i -lt 30 ]; do echo "pkg/$i"; i=$((i+1)); done ;;
build)
  out=
  while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done
  i=0; while [ $i -lt 30 ]; do echo "pkg/$i" >&2; i=$((i+1)); sleep 0.1; done
  echo binary >"$out"; chmod +x "$out" ;;
esac
`

// TestKubeAPIServerScriptProgress: the build says its stages, a realistic
// time, and how many packages are compiled as it goes (issue 14, point 4:
// it printed nothing for many minutes).
func TestKubeAPIServerScriptProgress(t *testing.T) {
	if testing.Short() {
		t.Skip("runs test/scripts/kube-apiserver.sh")
	}
	dir := t.TempDir()
	gobin := filepath.Join(dir, "go")
	if err := os.WriteFile(gobin, []byte(fakeGo), 0o755); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(dir, "cache")
	env := []string{"GO=" + gobin, "FAKE_GO_DIR=" + dir, "BERTH_TEST_CACHE=" + cache, "BERTH_PROGRESS_EVERY=1", "KUBE_VERSION=v1.34.3"}
	script := filepath.Join(ModuleRoot(t), "test", "scripts", "kube-apiserver.sh")
	stdout, stderr, code := Run(t, "bash", env, script)
	bin := filepath.Join(cache, "kube-apiserver-v1.34.3")
	if code != 0 || stdout != bin+"\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	for _, want := range []string{"about 6 minutes", "1/3 downloading", "2/3 resolving", "3/3 compiling up to 30 packages", "built " + bin} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	progress := regexp.MustCompile(`compiled (\d+) of up to 30 packages \(\d+m\d\ds\)`).FindAllStringSubmatch(stderr, -1)
	if len(progress) == 0 {
		t.Errorf("no progress line while compiling:\n%s", stderr)
	}
	// Cached: the second run prints the path at once.
	if stdout, stderr, code := Run(t, "bash", env, script); code != 0 || stdout != bin+"\n" || stderr != "" {
		t.Errorf("cached: exit %d, %q, %q", code, stdout, stderr)
	}
}
