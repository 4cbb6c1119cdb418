package lock

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/berth-dev/berth/state"
)

// FuzzLockCompose locks arbitrary bytes as the Compose file of an app: it
// must never panic, and what it returns must have every image pinned.
func FuzzLockCompose(f *testing.F) {
	for _, p := range []string{"testdata/golden/in/apps/web/compose.yaml", "testdata/golden/in/extensions/usbguard/compose.yaml"} {
		data, err := os.ReadFile(filepath.FromSlash(p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"services:\n  a:\n    image: nginx\n",
		"services:\n  a: {image: \"nginx:1\", build: .}\n",
		"services:\n  a:\n    image: >-\n      nginx\n",
		"services:\n  a:\n    image: !!str &x nginx\n  b:\n    image: *x\n",
		"services:\r\n  a:\r\n    image: 'ghcr.io/a/b:1'\r\n",
		"\xef\xbb\xbfservices:\n  a:\n    image: nginx\n",
		"x: &m {image: nginx}\nservices:\n  a: {<<: [*m, *m]}\n",
		"services:\n  a:\n    image: nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
		"services:\n  é: {labels: {é: é}, image: nginx}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fsys := fstest.MapFS{
			"berth.yaml": {Data: []byte(webApp)},
			webFile:      {Data: data},
		}
		res, err := lockFS(context.Background(), fsys, stubResolver{})
		if err != nil {
			if res != nil {
				t.Fatal("a result with an error")
			}
			return
		}
		out, ok := res.Overlay[webFile]
		if !ok {
			out = data
		}
		cf, issues := parseCompose(out)
		if cf == nil || len(issues) > 0 {
			t.Fatalf("the locked file does not parse: %v\n%q", issues, out)
		}
		for _, s := range cf.services {
			if s.image == nil {
				continue
			}
			ref, err := parseImage(s.image.Value)
			if err != nil || ref.digest == "" {
				t.Fatalf("service %q: image %q is not pinned (%v)\n%q", s.name, s.image.Value, err, out)
			}
		}
	})
}

// FuzzLockState locks arbitrary bytes as berth.yaml, with chart folders
// and values files present: it must never panic, and what it returns must
// have every oci:// chart pinned.
func FuzzLockState(f *testing.F) {
	for _, p := range []string{"testdata/golden/in/berth.yaml", "../../state/testdata/good/full.yaml", "../../state/testdata/good/values_aliases.yaml"} {
		data, err := os.ReadFile(filepath.FromSlash(p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(header + "apps:\n- name: m\n  helm:\n    chart: oci://a.io/c/m\n    version:\n      1.0\n    values: {x: .nan}\n"))
	f.Add([]byte(header + "apps: [{name: m, helm: {chart: oci://a.io/c/m, version: '1'}}]"))
	f.Add([]byte(header + "extensions:\r\n  m:\r\n    helm:\r\n      version: 2 # v\r\n      chart: oci://a.io/c/m\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fsys := fstest.MapFS{"berth.yaml": {Data: data}}
		st, err := state.Parse(state.FileName, data)
		if err == nil {
			for _, a := range append(st.Apps, st.Extensions...) {
				if a.Helm == nil {
					continue
				}
				if a.Helm.Path != "" {
					fsys[a.Helm.Path+"/Chart.yaml"] = &fstest.MapFile{Data: []byte("name: x\n")}
				}
				for _, v := range a.Helm.ValuesFiles {
					fsys[v] = &fstest.MapFile{Data: []byte("{}\n")}
				}
			}
		}
		res, err := lockFS(context.Background(), fsys, stubResolver{})
		if err != nil {
			if res != nil {
				t.Fatal("a result with an error")
			}
			return
		}
		if res == nil {
			t.Fatal("no result and no error")
		}
		out, ok := res.Overlay[state.FileName]
		if !ok {
			out = data
		}
		got, err := state.Parse(state.FileName, out)
		if err != nil {
			t.Fatalf("the locked berth.yaml does not parse: %v\n%q", err, out)
		}
		for _, a := range append(got.Apps, got.Extensions...) {
			if a.Helm != nil && a.Helm.Chart != "" && a.Helm.Digest == "" {
				t.Fatalf("chart of %q not pinned:\n%q", a.Name, out)
			}
		}
	})
}
