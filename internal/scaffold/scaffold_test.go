package scaffold

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/reconcile/config"
	"github.com/berth-dev/berth/state"
)

func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fleet")
	files, err := Write(Options{Dir: dir, App: "hello", Image: "127.0.0.1:5000/acme/hello:1.0.0", Repository: "oci://127.0.0.1:5000/fleet/line-3", Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".berthignore", ".github/workflows/berth.yaml", ".gitlab-ci.yml", "apps/hello/compose.yaml", "berth.yaml", "device/agent.yaml"}
	if !slices.Equal(files, want) {
		t.Errorf("files %q, want %q", files, want)
	}
	// berth.yaml and agent.yaml are what berth itself accepts.
	ds, err := state.Load(os.DirFS(dir))
	if err != nil {
		t.Fatalf("berth.yaml: %v", err)
	}
	if len(ds.Apps) != 1 || ds.Apps[0].Name != "hello" || ds.Apps[0].Compose == nil {
		t.Errorf("berth.yaml apps %+v", ds.Apps)
	}
	cfg, err := config.Load(filepath.Join(dir, "device", "agent.yaml"))
	if err != nil {
		t.Fatalf("agent.yaml: %v", err)
	}
	s := cfg.Sources[0]
	if s.Name != "line-3" || s.URL != "oci://127.0.0.1:5000/fleet/line-3" || !s.Insecure || !cfg.Apply.Compose.Enabled {
		t.Errorf("agent.yaml source %+v, apply %+v", s, cfg.Apply)
	}
	compose := read(t, filepath.Join(dir, "apps", "hello", "compose.yaml"))
	if !strings.Contains(compose, "image: 127.0.0.1:5000/acme/hello:1.0.0") {
		t.Errorf("compose.yaml:\n%s", compose)
	}
	gh := read(t, filepath.Join(dir, ".github", "workflows", "berth.yaml"))
	for _, w := range []string{"id-token: write", "berth push . oci://127.0.0.1:5000/fleet/line-3:1.0.${{ github.run_number }}", "cosign sign --yes 127.0.0.1:5000/fleet/line-3@${{ steps.push.outputs.digest }}"} {
		if !strings.Contains(gh, w) {
			t.Errorf("GitHub workflow lacks %q:\n%s", w, gh)
		}
	}
	if gl := read(t, filepath.Join(dir, ".gitlab-ci.yml")); !strings.Contains(gl, "--sign-key env://COSIGN_KEY") {
		t.Errorf(".gitlab-ci.yml:\n%s", gl)
	}
}

// TestWriteRefusesToOverwrite: with one file there, init writes nothing
// and names it.
func TestWriteRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "berth.yaml"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Write(Options{Dir: dir})
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "berth.yaml") {
		t.Fatalf("err = %v", err)
	}
	if got := read(t, filepath.Join(dir, "berth.yaml")); got != "mine" {
		t.Errorf("berth.yaml overwritten: %q", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("init wrote files beside the existing one: %v", entries)
	}
}

func TestWriteInvalid(t *testing.T) {
	for _, o := range []Options{
		{App: "Web_1"},
		{Repository: "registry.example.com/fleet"},
		{Repository: "oci://registry.example.com/fleet:1.0.0"},
		{Repository: "oci://registry.example.com"},
		{Image: "a b"},
	} {
		o.Dir = t.TempDir()
		if _, err := Write(o); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: err = %v", o, err)
		}
		if entries, _ := os.ReadDir(o.Dir); len(entries) != 0 {
			t.Errorf("%+v: wrote %v", o, entries)
		}
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
