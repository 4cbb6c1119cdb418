package helm

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"

	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/state"
)

// fastDir is a temporary folder on a tmpfs when there is one: the fuzzers
// write files on every input.
func fastDir(f *testing.F) string {
	dir, err := os.MkdirTemp("/dev/shm", "berth-helm-fuzz-")
	if err != nil {
		return f.TempDir()
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// chartTgz is a chart archive of files below folder top, as `helm package`
// writes it.
func chartTgz(t testing.TB, top string, files map[string]string) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: top + "/" + n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(files[n]))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// FuzzChartArchive loads arbitrary chart archives both ways a device meets
// them: an OCI chart layer as pullFrom loads it (Helm's archive loader,
// after the layer's digest was verified), and a chart folder of a revision
// (the archive extracted by berth's extractor, then loadPathChart). Neither
// may panic; a chart either accepts is valid by Helm's rules and has a
// name and version; a chart folder's hash is the same on every load.
func FuzzChartArchive(f *testing.F) {
	f.Add(chartTgz(f, "hello", helloChart("1.0.0")))
	deps := helloChart("2.0.0")
	deps["Chart.yaml"] = "apiVersion: v2\nname: hello\nversion: 2.0.0\ndependencies:\n  - name: sub\n    version: 0.1.0\n"
	deps["charts/sub/Chart.yaml"] = "apiVersion: v2\nname: sub\nversion: 0.1.0\n"
	deps["charts/sub/values.yaml"] = "x: 1\n"
	deps["values.schema.json"] = `{"type":"object","properties":{"port":{"type":"integer"}}}`
	f.Add(chartTgz(f, "hello", deps))
	f.Add(chartTgz(f, "hello", map[string]string{"Chart.yaml": "apiVersion: v1\nname: hello\nversion: 0.0.1\n", "requirements.yaml": "dependencies: []\n"}))
	f.Add(chartTgz(f, "hello", map[string]string{"Chart.yaml": "name: hello\n", "values.yaml": "a: [\n"}))
	dir := fastDir(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if ch, err := loader.LoadArchive(bytes.NewReader(data)); err == nil {
			if ch.Metadata == nil || ch.Name() == "" || ch.Metadata.Version == "" {
				t.Fatalf("archive loaded as a chart without name or version: %+v", ch.Metadata)
			}
			if err := ch.Validate(); err != nil {
				t.Fatalf("archive loaded as an invalid chart: %v", err)
			}
		}

		rev, err := os.MkdirTemp(dir, "rev-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(rev)
		if _, err := archive.Extract(context.Background(), bytes.NewReader(data), rev, archive.Limits{MaxSize: 8 << 20, MaxFiles: 1000}); err != nil {
			return
		}
		tops, _ := os.ReadDir(rev)
		for _, top := range tops {
			ch, h1, err := loadPathChart(rev, top.Name())
			if err != nil {
				continue
			}
			if ch.Metadata == nil || ch.Name() == "" || ch.Metadata.Version == "" {
				t.Fatalf("folder %s loaded as a chart without name or version", top.Name())
			}
			if err := ch.Validate(); err != nil {
				t.Fatalf("folder %s loaded as an invalid chart: %v", top.Name(), err)
			}
			if _, h2, err := loadPathChart(rev, top.Name()); err != nil || h2 != h1 {
				t.Fatalf("second load of %s: %s, %v; want %s", top.Name(), h2, err, h1)
			}
		}
	})
}

// FuzzValues merges an arbitrary values file of the revision and an
// arbitrary device-local values file with inline values, as Apply does.
// It must never panic; a file Helm cannot read is an error, never
// skipped; the result is normalised (a JSON round trip leaves it
// unchanged), the device file's top-level values win, and the config hash
// of the result is stable.
func FuzzValues(f *testing.F) {
	for _, s := range []struct{ rev, device string }{
		{"greeting: hi\nport: 8080\nnested: {a: 1, b: [1, 2]}\n", "port: 9090\nnested: {b: null}\n"},
		{"a: &x {k: v}\nb: *x\n", ""},
		{"", "just a string\n"},
		{"big: 1e400\nkey: !!binary aGVsbG8=\nt: 2025-01-01\n", "? [a, b]\n: complex key\n"},
		{"---\na: 1\n---\nb: 2\n", "{}"},
	} {
		f.Add([]byte(s.rev), []byte(s.device))
	}
	dir := fastDir(f)
	revDir := filepath.Join(dir, "rev")
	local := filepath.Join(dir, "device")
	for _, d := range []string{filepath.Join(revDir, "v"), local} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			f.Fatal(err)
		}
	}
	a := &Applier{opts: Options{ValuesDir: local}}
	app := state.App{Name: "web", Helm: &state.Helm{
		ValuesFiles: []string{"v/values.yaml"},
		Values:      map[string]any{"inline": true, "port": 1},
	}}
	rev := state.Revision{Dir: revDir}
	f.Fuzz(func(t *testing.T, revValues, device []byte) {
		if err := os.WriteFile(filepath.Join(revDir, "v", "values.yaml"), revValues, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(local, "web.yaml"), device, 0o600); err != nil {
			t.Fatal(err)
		}
		vals, err := a.values(rev, app)
		_, revErr := chartutil.ReadValues(revValues)
		dev, devErr := chartutil.ReadValues(device)
		if err != nil {
			return
		}
		if revErr != nil || devErr != nil {
			t.Fatalf("values merged although a file does not read: %v, %v", revErr, devErr)
		}
		b, err := json.Marshal(vals)
		if err != nil {
			t.Fatalf("result does not encode: %v", err)
		}
		var again map[string]any
		if err := json.Unmarshal(b, &again); err != nil || !reflect.DeepEqual(again, vals) {
			t.Fatalf("result is not normalised: %v", err)
		}
		for k, v := range dev {
			if _, isMap := v.(map[string]any); isMap {
				continue
			}
			want, err := normalise(v)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(vals[k], want) {
				t.Fatalf("device value %q = %#v, result has %#v", k, want, vals[k])
			}
		}
		h1, err1 := configHash("sha256:c", vals)
		h2, err2 := configHash("sha256:c", vals)
		if err1 != nil || err2 != nil || h1 != h2 {
			t.Fatalf("config hash %s %s, %v %v", h1, h2, err1, err2)
		}
	})
}

// normalise is v after a JSON round trip, as Helm stores values.
func normalise(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	return out, json.Unmarshal(b, &out)
}
