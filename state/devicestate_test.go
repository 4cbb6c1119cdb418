package state

import (
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata")

// TestParseGood parses every file of testdata/good.
func TestParseGood(t *testing.T) {
	files, _ := filepath.Glob("testdata/good/*.yaml")
	if len(files) == 0 {
		t.Fatal("no test files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			st, err := Parse(FileName, data)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if st.APIVersion != APIVersion || st.Kind != Kind {
				t.Errorf("header = %q %q", st.APIVersion, st.Kind)
			}
		})
	}
}

// TestParseBad parses every file of testdata/bad and compares the error
// with the file's .golden.
func TestParseBad(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(files) == 0 {
		t.Fatal("no test files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			st, err := Parse(FileName, data)
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", st)
			}
			if st != nil {
				t.Errorf("Parse returned a state with an error")
			}
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var pe *Error
				if !errors.As(e, &pe) {
					t.Errorf("%v is not an *Error", e)
				} else if pe.Line == 0 && !strings.Contains(f, "empty") {
					t.Errorf("%v has no line", e)
				}
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if got != string(want) {
				t.Errorf("errors:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// TestParseFull checks every field and default of testdata/good/full.yaml.
func TestParseFull(t *testing.T) {
	data, err := os.ReadFile("testdata/good/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	st, err := Parse(FileName, data)
	if err != nil {
		t.Fatal(err)
	}
	want := &DeviceState{
		APIVersion: APIVersion,
		Kind:       Kind,
		Apps: []App{
			{Name: "web", Compose: &Compose{Path: "apps/web"}, Prune: Prune{Volumes: true}},
			{Name: "metrics", Helm: &Helm{
				Chart:       "oci://ghcr.io/acme/charts/metrics",
				Version:     "2.3.1",
				Digest:      "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
				Namespace:   "metrics",
				ReleaseName: "metrics-line3",
				Values:      map[string]any{"replicas": 2, "image": map[string]any{"tag": "1.0"}},
				ValuesFiles: []string{"apps/metrics/values.yaml"},
				Wait:        false,
				Timeout:     90 * time.Second,
				MaxHistory:  3,
			}},
			{Name: "ui", Helm: &Helm{Path: "charts/ui", ReleaseName: "ui", Wait: true, Timeout: DefaultTimeout, MaxHistory: DefaultMaxHistory}},
			{Name: "api", Compose: &Compose{Path: "apps/api", Files: []string{"compose.yaml", "compose.prod.yaml"}}},
		},
		Extensions: []App{
			{Name: "usbguard", Compose: &Compose{Path: "extensions/usbguard"}},
			{Name: "vpn", Helm: &Helm{
				Chart:       "oci://registry.local:5000/charts/vpn",
				Version:     "1.0.0+build.7",
				ReleaseName: "vpn",
				Wait:        true,
				Timeout:     DefaultTimeout,
				MaxHistory:  DefaultMaxHistory,
			}},
		},
	}
	if !reflect.DeepEqual(st, want) {
		t.Errorf("got  %#v\nwant %#v", st, want)
		for i := range st.Apps {
			if !reflect.DeepEqual(st.Apps[i], want.Apps[i]) {
				t.Errorf("app %d: got %+v %+v, want %+v %+v", i, st.Apps[i], st.Apps[i].Helm, want.Apps[i], want.Apps[i].Helm)
			}
		}
	}
}

// TestParseValues checks that anchors and merge keys work inside values.
func TestParseValues(t *testing.T) {
	data, err := os.ReadFile("testdata/good/values_aliases.yaml")
	if err != nil {
		t.Fatal(err)
	}
	st, err := Parse(FileName, data)
	if err != nil {
		t.Fatal(err)
	}
	h := st.Apps[0].Helm
	if h.Version != "2" {
		t.Errorf("version = %q, want the number as written", h.Version)
	}
	want := map[string]any{
		"defaults":  map[string]any{"cpu": "100m", "memory": "64Mi"},
		"resources": map[string]any{"cpu": "100m", "memory": "128Mi"},
		"copy":      map[string]any{"cpu": "100m", "memory": "64Mi"},
	}
	if !reflect.DeepEqual(h.Values, want) {
		t.Errorf("values = %#v, want %#v", h.Values, want)
	}
	if c := st.Apps[1].Compose; c.Path != "." {
		t.Errorf("compose path = %q", c.Path)
	}
}

// TestParseErrorShape checks the exact shape of an error.
func TestParseErrorShape(t *testing.T) {
	data := "apiVersion: berth.dev/v1\nkind: DeviceState\napps:\n  - name: web\n    compose: {path: apps/web}\n  - name: metrics\n    helm: {path: charts/m, chartt: x}\n"
	_, err := Parse("berth.yaml", []byte(data))
	want := `berth.yaml:7: apps[1].helm: unknown field "chartt" (did you mean "chart"?)`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %s", err, want)
	}
	var pe *Error
	if !errors.As(err, &pe) || pe.Line != 7 || pe.Field != "apps[1].helm" || pe.File != "berth.yaml" {
		t.Errorf("error = %#v", pe)
	}
}

func TestLoad(t *testing.T) {
	good, err := os.ReadFile("testdata/good/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		fsys    fstest.MapFS
		wantErr string
		notExit bool
	}{
		{name: "ok", fsys: fstest.MapFS{FileName: {Data: good}}},
		{name: "missing", fsys: fstest.MapFS{}, notExit: true, wantErr: "berth.yaml"},
		{name: "too large", fsys: fstest.MapFS{FileName: {Data: make([]byte, MaxFileSize+1)}}, wantErr: "larger than"},
		{name: "bad", fsys: fstest.MapFS{FileName: {Data: []byte("kind: x\n")}}, wantErr: `berth.yaml:1: kind: must be "DeviceState"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := Load(tt.fsys)
			if tt.wantErr == "" {
				if err != nil || st == nil {
					t.Fatalf("Load = %v, %v", st, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
			if errors.Is(err, fs.ErrNotExist) != tt.notExit {
				t.Errorf("errors.Is(err, fs.ErrNotExist) = %v", !tt.notExit)
			}
		})
	}
}

func TestConfigFiles(t *testing.T) {
	f := &fstest.MapFile{Data: []byte("services: {}\n")}
	fsys := fstest.MapFS{
		"one/compose.yml":              f,
		"two/compose.yaml":             f,
		"two/docker-compose.yml":       f,
		"none/README":                  f,
		"many/compose.yaml":            f,
		"many/compose.prod.yaml":       f,
		"docker/docker-compose.yaml":   f,
		"notdir":                       f,
		"dir/compose.yaml/placeholder": f,
	}
	tests := []struct {
		c       Compose
		want    []string
		wantErr string
	}{
		{c: Compose{Path: "one"}, want: []string{"one/compose.yml"}},
		{c: Compose{Path: "docker"}, want: []string{"docker/docker-compose.yaml"}},
		{c: Compose{Path: "two"}, wantErr: `both compose.yaml and docker-compose.yml in "two": keep one, or list the files to load in compose.files`},
		{c: Compose{Path: "none"}, wantErr: `no compose.yaml, compose.yml, docker-compose.yaml or docker-compose.yml in "none"`},
		{c: Compose{Path: "many", Files: []string{"compose.yaml", "compose.prod.yaml"}}, want: []string{"many/compose.yaml", "many/compose.prod.yaml"}},
		{c: Compose{Path: "many", Files: []string{"compose.yaml", "nope.yaml"}}, wantErr: `compose file "many/nope.yaml" does not exist`},
		{c: Compose{Path: "missing"}, wantErr: `compose folder "missing" does not exist`},
		{c: Compose{Path: "notdir"}, wantErr: `compose path "notdir" is not a folder`},
		{c: Compose{Path: "dir"}, wantErr: `no compose.yaml`},
		{c: Compose{Path: "dir", Files: []string{"compose.yaml"}}, wantErr: `compose file "dir/compose.yaml" is not a regular file`},
	}
	for _, tt := range tests {
		t.Run(tt.c.Path, func(t *testing.T) {
			got, err := tt.c.ConfigFiles(fsys)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, dir := range []string{"testdata/good", "testdata/bad"} {
		files, _ := filepath.Glob(dir + "/*.yaml")
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := Parse(FileName, data)
		if err != nil {
			if st != nil {
				t.Fatal("a state returned with an error")
			}
			if !strings.HasPrefix(err.Error(), FileName) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		checkRollout(t, st.Rollout)
		names := map[string]bool{}
		for _, a := range append(st.Apps, st.Extensions...) {
			if (a.Compose == nil) == (a.Helm == nil) {
				t.Fatalf("app %q: not exactly one of compose and helm", a.Name)
			}
			if names[a.Name] || !labelRE.MatchString(a.Name) {
				t.Fatalf("bad or duplicate name %q", a.Name)
			}
			names[a.Name] = true
			if h := a.Helm; h != nil {
				if (h.Chart == "") == (h.Path == "") || h.Timeout <= 0 || (h.Chart != "" && h.Version == "") || h.MaxHistory < 1 || h.MaxHistory > MaxMaxHistory {
					t.Fatalf("app %q: invalid helm %+v", a.Name, h)
				}
			}
		}
	})
}
