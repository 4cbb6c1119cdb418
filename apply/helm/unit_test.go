package helm

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/berth-dev/berth/state"
)

// TestPathChart checks the chart folder loader: .helmignore, a hash that
// follows the files and not where they are, and no way out of the
// revision.
func TestPathChart(t *testing.T) {
	write := func(dir string, files map[string]string) {
		for p, c := range files {
			full := filepath.Join(dir, filepath.FromSlash(p))
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	d1, d2 := t.TempDir(), t.TempDir()
	write(d1, withPrefix("c", helloChart("1.0.0")))
	write(d2, withPrefix("c", helloChart("1.0.0")))
	ch, h1, err := loadPathChart(d1, "c")
	if err != nil {
		t.Fatal(err)
	}
	if ch.Name() != "hello" || ch.Metadata.Version != "1.0.0" || len(ch.Templates) != 3 {
		t.Errorf("chart = %s %s, %d templates", ch.Name(), ch.Metadata.Version, len(ch.Templates))
	}
	for _, f := range ch.Files {
		if f.Name == "README.md" {
			t.Error(".helmignore was not honoured")
		}
	}
	if _, h2, err := loadPathChart(d2, "c"); err != nil || h2 != h1 || !strings.HasPrefix(h1, "sha256:") {
		t.Errorf("same files elsewhere: %s, %v; want %s", h2, err, h1)
	}
	write(d2, map[string]string{"c/README.md": "ignored, so no change\n"})
	if _, h2, _ := loadPathChart(d2, "c"); h2 != h1 {
		t.Error("an ignored file changed the hash")
	}
	write(d2, map[string]string{"c/values.yaml": "greeting: other\n"})
	if _, h2, _ := loadPathChart(d2, "c"); h2 == h1 {
		t.Error("another values.yaml kept the hash")
	}

	// Symlinks: inside the revision they are read, out of it refused.
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("password: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d3 := t.TempDir()
	write(d3, withPrefix("c", helloChart("1.0.0")))
	write(d3, map[string]string{"shared/extra.yaml": "a: b\n"})
	if err := os.Symlink("../../shared/extra.yaml", filepath.Join(d3, "c", "templates", "extra.txt")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadPathChart(d3, "c"); err != nil {
		t.Errorf("symlink inside the revision: %v", err)
	}
	if err := os.Symlink(secret, filepath.Join(d3, "c", "files.yaml")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadPathChart(d3, "c"); err == nil || !strings.Contains(err.Error(), "files.yaml") {
		t.Errorf("symlink out of the revision: err = %v", err)
	}

	for _, tc := range []struct{ path, want string }{
		{"missing", "does not exist"},
		{"c/Chart.yaml", "is not a folder"},
		{"../x", "chart folder"},
	} {
		if _, _, err := loadPathChart(d1, tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.path, err, tc.want)
		}
	}
}

// TestValues checks the merge order: values files, inline values, the
// device-local file; and what the hash follows.
func TestValues(t *testing.T) {
	dir := t.TempDir()
	local := t.TempDir()
	files := map[string]string{
		"v/a.yaml": "a: 1\nnested: {p: a, q: a}\nlist: [1, 2]\n",
		"v/b.yaml": "nested: {q: b, r: b}\nlist: [3]\n",
	}
	for p, c := range files {
		full := filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		os.WriteFile(full, []byte(c), 0o644)
	}
	a := &Applier{opts: Options{ValuesDir: local}}
	app := state.App{Name: "web", Helm: &state.Helm{
		ValuesFiles: []string{"v/a.yaml", "v/b.yaml"},
		Values:      map[string]any{"nested": map[string]any{"r": "inline"}, "b": true},
	}}
	rev := state.Revision{Dir: dir}
	got, err := a.values(rev, app)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"a": 1.0, "b": true, "list": []any{3.0},
		"nested": map[string]any{"p": "a", "q": "b", "r": "inline"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("values = %#v\nwant %#v", got, want)
	}
	h1, _ := configHash("sha256:c", got)

	if err := os.WriteFile(filepath.Join(local, "web.yaml"), []byte("nested: {r: device}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = a.values(rev, app)
	if err != nil {
		t.Fatal(err)
	}
	if r := got["nested"].(map[string]any)["r"]; r != "device" {
		t.Errorf("the device-local file did not win: %v", r)
	}
	h2, _ := configHash("sha256:c", got)
	h3, _ := configHash("sha256:d", got)
	if h1 == h2 || h2 == h3 || len(h1) != 32 {
		t.Errorf("hashes %s %s %s: want them different, of 32 digits", h1, h2, h3)
	}
	if again, _ := configHash("sha256:c", got); again != h2 {
		t.Error("the hash is not stable")
	}

	for _, tc := range []struct {
		files []string
		want  string
	}{
		{[]string{"v/missing.yaml"}, `values file "v/missing.yaml" does not exist`},
		{[]string{"../outside.yaml"}, `values file "../outside.yaml"`},
	} {
		app := state.App{Name: "x", Helm: &state.Helm{ValuesFiles: tc.files}}
		if _, err := a.values(rev, app); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.files, err, tc.want)
		}
	}
	// No values folder on the device is fine.
	b := &Applier{opts: Options{ValuesDir: filepath.Join(local, "none")}}
	if _, err := b.values(rev, app); err != nil {
		t.Errorf("no values folder: %v", err)
	}
}

func TestChangedFields(t *testing.T) {
	tests := []struct {
		name      string
		want, got map[string]any
		paths     []string
	}{
		{
			name: "equal, live has more",
			want: map[string]any{"data": map[string]any{"a": "1"}, "metadata": map[string]any{"name": "x", "labels": map[string]any{"l": "v"}}},
			got:  map[string]any{"data": map[string]any{"a": "1", "b": "2"}, "metadata": map[string]any{"name": "x", "uid": "u", "labels": map[string]any{"l": "v", "m": "w"}}},
		},
		{
			name:  "changed value and label",
			want:  map[string]any{"data": map[string]any{"a": "1"}, "metadata": map[string]any{"labels": map[string]any{"l": "v"}}},
			got:   map[string]any{"data": map[string]any{"a": "2"}, "metadata": map[string]any{"labels": map[string]any{}}},
			paths: []string{"data.a", "metadata.labels.l"},
		},
		{
			name: "numbers of different types, zero and empty values, null",
			want: map[string]any{"spec": map[string]any{"port": int64(80), "weight": 0.0, "opts": map[string]any{}, "list": []any{}, "name": "", "x": nil}},
			got:  map[string]any{"spec": map[string]any{"port": float64(80)}},
		},
		{
			name:  "lists",
			want:  map[string]any{"spec": map[string]any{"ports": []any{map[string]any{"port": 80}}, "args": []any{"a"}}},
			got:   map[string]any{"spec": map[string]any{"ports": []any{map[string]any{"port": 81, "protocol": "TCP"}}, "args": []any{"a", "b"}}},
			paths: []string{"spec.args", "spec.ports[0].port"},
		},
		{
			name:  "status and keys with dots",
			want:  map[string]any{"status": map[string]any{"ready": true}, "metadata": map[string]any{"annotations": map[string]any{"a.b/c": "1"}}},
			got:   map[string]any{"metadata": map[string]any{"annotations": map[string]any{"a.b/c": "2"}}},
			paths: []string{"metadata.annotations[a.b/c]"},
		},
		{
			name:  "type changed",
			want:  map[string]any{"data": map[string]any{"a": "1"}},
			got:   map[string]any{"data": "x"},
			paths: []string{"data"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := changedFields(tt.want, tt.got); !reflect.DeepEqual(got, tt.paths) {
				t.Errorf("changedFields = %q, want %q", got, tt.paths)
			}
		})
	}
}
