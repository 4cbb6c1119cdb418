package lock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata")

const (
	header  = "apiVersion: berth.dev/v1\nkind: DeviceState\n"
	pinned  = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	webApp  = header + "apps:\n  - name: web\n    compose: {path: apps/web}\n"
	webFile = "apps/web/compose.yaml"
)

// writeTree writes files under a new folder and returns it.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, content := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// digests are the digests of what the test registry holds.
type digests struct {
	web, multi, nginx, chart, vpn, usbguard string
}

func setup(t *testing.T) (*registryResolver, digests) {
	reg := newTestRegistry(t)
	d := digests{
		web:      reg.pushRandom("acme/web:1.2"),
		multi:    reg.pushRandomIndex("acme/multi:1.0"),
		nginx:    reg.pushRandom("library/nginx:latest"),
		chart:    reg.push("charts/metrics:2.3.1", staticImage(t, "metrics-2.3.1", helmConfig, helmLayer)),
		vpn:      reg.push("charts/vpn:1.0.0_build.7", staticImage(t, "vpn", helmConfig, helmLayer)),
		usbguard: reg.pushRandom("acme/usbguard:0.9"),
	}
	return &registryResolver{reg: reg, hosts: map[string]bool{"registry.local:5000": true, "docker.io": true}}, d
}

func TestLock(t *testing.T) {
	r, d := setup(t)
	tests := []struct {
		name  string
		files map[string]string
		// want is what some files of the overlay must be; nil content
		// means the file must not be in the overlay.
		want    map[string]*string
		entries []Entry // compared without digests when wantD is nil
		wantD   []string
		// wantErr are substrings of the error, in order.
		wantErr []string
		check   func(t *testing.T, err error)
	}{
		{
			name: "tag pinned to its digest",
			files: map[string]string{
				"berth.yaml": webApp,
				webFile:      "services:\n  api:\n    image: registry.local:5000/acme/web:1.2 # the API\n    ports: [\"80:80\"]\n",
			},
			want: map[string]*string{
				webFile: ptr("services:\n  api:\n    image: registry.local:5000/acme/web:1.2@" + d.web + " # the API\n    ports: [\"80:80\"]\n"),
			},
			entries: []Entry{{App: "web", File: webFile, Service: "api", Kind: KindImage, Ref: "registry.local:5000/acme/web:1.2", Repository: "registry.local:5000/acme/web", Digest: d.web}},
		},
		{
			name: "multi-platform image pinned to its index",
			files: map[string]string{
				"berth.yaml": webApp,
				webFile:      "services:\n  api:\n    image: \"registry.local:5000/acme/multi:1.0\"\n",
			},
			want: map[string]*string{
				webFile: ptr("services:\n  api:\n    image: \"registry.local:5000/acme/multi:1.0@" + d.multi + "\"\n"),
			},
		},
		{
			name: "Docker Hub short name normalised, tag latest added",
			files: map[string]string{
				"berth.yaml": webApp,
				webFile:      "services:\n  proxy: {image: 'nginx'}\n",
			},
			want: map[string]*string{
				webFile: ptr("services:\n  proxy: {image: 'nginx:latest@" + d.nginx + "'}\n"),
			},
			entries: []Entry{{App: "web", File: webFile, Service: "proxy", Kind: KindImage, Ref: "nginx", Repository: "docker.io/library/nginx", Digest: d.nginx}},
		},
		{
			name: "already pinned left alone",
			files: map[string]string{
				"berth.yaml": webApp,
				webFile:      "services:\n  api:\n    image: registry.local:5000/acme/gone:1.2@" + pinned + "\n",
			},
			want:    map[string]*string{webFile: nil, "berth.yaml": nil},
			entries: []Entry{{App: "web", File: webFile, Service: "api", Kind: KindImage, Ref: "registry.local:5000/acme/gone:1.2@" + pinned, Repository: "registry.local:5000/acme/gone", Digest: pinned}},
		},
		{
			name: "pinned with a bad digest",
			files: map[string]string{
				"berth.yaml": webApp,
				webFile:      "services:\n  api:\n    image: registry.local:5000/acme/web@sha256:abc\n",
			},
			wantErr: []string{`lock apps/web/compose.yaml:3 (app "web", service "api"): image "registry.local:5000/acme/web@sha256:abc": is not a valid reference`},
		},
		{
			name: "unknown image",
			files: map[string]string{
				"berth.yaml": webApp,
				webFile:      "services:\n  db:\n    image: postgres@" + pinned + "\n  api:\n    image: registry.local:5000/acme/nope:1.0\n",
			},
			wantErr: []string{`lock apps/web/compose.yaml:5 (app "web", service "api"): image "registry.local:5000/acme/nope:1.0": `, "404 Not Found"},
			check: func(t *testing.T, err error) {
				var le *Error
				if !errors.As(err, &le) {
					t.Fatalf("%v is not an *Error", err)
				}
				want := Error{File: webFile, Line: 5, App: "web", Service: "api", Kind: KindImage, Ref: "registry.local:5000/acme/nope:1.0"}
				le2 := *le
				le2.Err = nil
				if le2 != want {
					t.Errorf("error = %+v, want %+v", le2, want)
				}
				var te *transport.Error
				if !errors.As(err, &te) {
					t.Errorf("the resolver's error is not wrapped: %v", err)
				}
			},
		},
		{
			name: "interpolated image",
			files: map[string]string{
				"berth.yaml": webApp,
				webFile:      "services:\n  api:\n    image: ${REGISTRY:-registry.local:5000}/acme/web:1.2\n",
			},
			wantErr: []string{`lock apps/web/compose.yaml:3 (app "web", service "api"): image "${REGISTRY:-registry.local:5000}/acme/web:1.2": uses variable interpolation`},
		},
		{
			name: "build without image",
			files: map[string]string{
				"berth.yaml": webApp,
				webFile:      "services:\n  api:\n    build: .\n  web:\n    build: ./web\n    image: registry.local:5000/acme/web:1.2\n",
			},
			wantErr: []string{`lock apps/web/compose.yaml:3 (app "web", service "api"): build: without image: devices do not build images`},
		},
		{
			name: "no image",
			files: map[string]string{
				"berth.yaml": webApp,
				webFile:      "services:\n  api:\n    command: [sleep, infinity]\n",
			},
			wantErr: []string{`lock apps/web/compose.yaml:2 (app "web", service "api"): no image`},
		},
		{
			name: "override file sets the image",
			files: map[string]string{
				"berth.yaml":                 header + "apps:\n  - name: web\n    compose: {path: apps/web, files: [compose.yaml, compose.prod.yaml]}\n",
				webFile:                      "services:\n  api:\n    build: .\n",
				"apps/web/compose.prod.yaml": "services:\n  api:\n    image: registry.local:5000/acme/web:1.2\n",
			},
			want: map[string]*string{
				webFile:                      nil,
				"apps/web/compose.prod.yaml": ptr("services:\n  api:\n    image: registry.local:5000/acme/web:1.2@" + d.web + "\n"),
			},
		},
		{
			name: "extends and include refused",
			files: map[string]string{
				"berth.yaml": webApp,
				webFile:      "include: [other.yaml]\nservices:\n  api:\n    extends: {file: base.yaml, service: api}\n  web:\n    extends: api\n",
			},
			wantErr: []string{
				`lock apps/web/compose.yaml:1 (app "web"): include: is not supported`,
				`lock apps/web/compose.yaml:4 (app "web", service "api"): extends.file is not supported`,
			},
		},
		{
			name: "helm chart digest written",
			files: map[string]string{
				"berth.yaml": header + "apps:\n  - name: metrics\n    helm:\n      chart: oci://registry.local:5000/charts/metrics\n      version: 2.3.1 # pinned below\n      namespace: metrics\n",
			},
			want: map[string]*string{
				"berth.yaml": ptr(header + "apps:\n  - name: metrics\n    helm:\n      chart: oci://registry.local:5000/charts/metrics\n      version: 2.3.1 # pinned below\n      digest: " + d.chart + "\n      namespace: metrics\n"),
			},
			entries: []Entry{{App: "metrics", File: "berth.yaml", Kind: KindChart, Ref: "oci://registry.local:5000/charts/metrics:2.3.1", Repository: "registry.local:5000/charts/metrics", Digest: d.chart}},
		},
		{
			name: "helm chart digest written in a flow mapping, last line",
			files: map[string]string{
				"berth.yaml": header + "apps:\n  - {name: metrics, helm: {chart: oci://registry.local:5000/charts/metrics, version: \"2.3.1\"}}",
			},
			want: map[string]*string{
				"berth.yaml": ptr(header + "apps:\n  - {name: metrics, helm: {chart: oci://registry.local:5000/charts/metrics, version: \"2.3.1\", digest: " + d.chart + "}}"),
			},
		},
		{
			name: "helm chart digest already right",
			files: map[string]string{
				"berth.yaml": header + "apps:\n  - name: metrics\n    helm:\n      chart: oci://registry.local:5000/charts/metrics\n      version: 2.3.1\n      digest: " + d.chart + "\n",
			},
			want:    map[string]*string{"berth.yaml": nil},
			entries: []Entry{{App: "metrics", File: "berth.yaml", Kind: KindChart, Ref: "oci://registry.local:5000/charts/metrics:2.3.1", Repository: "registry.local:5000/charts/metrics", Digest: d.chart}},
		},
		{
			name: "helm chart digest mismatch",
			files: map[string]string{
				"berth.yaml": header + "apps:\n  - name: metrics\n    helm:\n      chart: oci://registry.local:5000/charts/metrics\n      version: 2.3.1\n      digest: " + pinned + "\n",
			},
			wantErr: []string{`lock berth.yaml:8 (app "metrics"): chart "oci://registry.local:5000/charts/metrics:2.3.1": berth.yaml pins ` + pinned + ` but the registry has ` + d.chart},
		},
		{
			name: "helm chart path and values files",
			files: map[string]string{
				"berth.yaml":              header + "apps:\n  - name: ui\n    helm:\n      path: charts/ui\n      valuesFiles: [apps/ui/values.yaml, apps/ui/missing.yaml, apps/ui/bad.yaml]\n  - name: nochart\n    helm: {path: charts/none}\n",
				"charts/ui/Chart.yaml":    "apiVersion: v2\nname: ui\nversion: 0.1.0\n",
				"charts/none/values.yaml": "{}\n",
				"apps/ui/values.yaml":     "replicas: 2\n",
				"apps/ui/bad.yaml":        "- a list\n",
			},
			wantErr: []string{
				`lock berth.yaml:7 (app "ui"): values file "apps/ui/missing.yaml" does not exist`,
				`lock berth.yaml:7 (app "ui"): values file "apps/ui/bad.yaml": must be a mapping`,
				`lock berth.yaml:9 (app "nochart"): chart folder "charts/none" has no Chart.yaml: "charts/none/Chart.yaml" does not exist`,
			},
		},
		{
			name: "compose folder missing",
			files: map[string]string{
				"berth.yaml": webApp,
			},
			wantErr: []string{`lock berth.yaml:5 (app "web"): compose folder "apps/web" does not exist`},
		},
		{
			name: "extensions locked too",
			files: map[string]string{
				"berth.yaml":                       header + "extensions:\n  usbguard: {compose: {path: extensions/usbguard}}\n  vpn:\n    helm: {chart: oci://registry.local:5000/charts/vpn, version: 1.0.0+build.7}\n",
				"extensions/usbguard/compose.yaml": "services:\n  usbguard:\n    image: registry.local:5000/acme/usbguard:0.9\n",
			},
			want: map[string]*string{
				"extensions/usbguard/compose.yaml": ptr("services:\n  usbguard:\n    image: registry.local:5000/acme/usbguard:0.9@" + d.usbguard + "\n"),
				"berth.yaml":                       ptr(header + "extensions:\n  usbguard: {compose: {path: extensions/usbguard}}\n  vpn:\n    helm: {chart: oci://registry.local:5000/charts/vpn, version: 1.0.0+build.7, digest: " + d.vpn + "}\n"),
			},
			entries: []Entry{
				{App: "usbguard", Extension: true, File: "extensions/usbguard/compose.yaml", Service: "usbguard", Kind: KindImage, Ref: "registry.local:5000/acme/usbguard:0.9", Repository: "registry.local:5000/acme/usbguard", Digest: d.usbguard},
				{App: "vpn", Extension: true, File: "berth.yaml", Kind: KindChart, Ref: "oci://registry.local:5000/charts/vpn:1.0.0+build.7", Repository: "registry.local:5000/charts/vpn", Digest: d.vpn},
			},
		},
		{
			name: "unresolvable references all reported",
			files: map[string]string{
				"berth.yaml":                       header + "apps:\n  - name: web\n    compose: {path: apps/web}\n  - name: metrics\n    helm: {chart: oci://registry.local:5000/charts/metrics, version: 9.9.9}\nextensions:\n  usbguard: {compose: {path: extensions/usbguard}}\n",
				webFile:                            "services:\n  api:\n    image: registry.local:5000/acme/nope:1.0\n  web:\n    image: registry.local:5000/acme/web:1.2\n",
				"extensions/usbguard/compose.yaml": "services:\n  usbguard:\n    image: registry.local:5000/acme/usbguard:nope\n",
			},
			wantErr: []string{
				`lock apps/web/compose.yaml:3 (app "web", service "api"): image "registry.local:5000/acme/nope:1.0": `,
				`lock berth.yaml:7 (app "metrics"): chart "oci://registry.local:5000/charts/metrics:9.9.9": resolve registry.local:5000/charts/metrics:9.9.9: `,
				`lock extensions/usbguard/compose.yaml:3 (extension "usbguard", service "usbguard"): image "registry.local:5000/acme/usbguard:nope": `,
			},
			check: func(t *testing.T, err error) {
				if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != 3 {
					t.Errorf("%d errors, want 3", n)
				}
			},
		},
		{
			name: "block scalar image: the file is encoded again",
			files: map[string]string{
				"berth.yaml": webApp,
				webFile:      "# kept\nservices:\n  api:\n    image: >-\n      registry.local:5000/acme/web:1.2\n    ports: [\"80:80\"]\n",
			},
			want: map[string]*string{
				webFile: ptr("# kept\nservices:\n  api:\n    image: registry.local:5000/acme/web:1.2@" + d.web + "\n    ports: [\"80:80\"]\n"),
			},
		},
		{
			name: "version on its own line: berth.yaml is encoded again",
			files: map[string]string{
				"berth.yaml": header + "apps:\n  - name: metrics\n    helm:\n      chart: oci://registry.local:5000/charts/metrics\n      version:\n        2.3.1\n",
			},
			want: map[string]*string{
				"berth.yaml": ptr(header + "apps:\n  - name: metrics\n    helm:\n      chart: oci://registry.local:5000/charts/metrics\n      version: 2.3.1\n      digest: " + d.chart + "\n"),
			},
		},
		{
			name: "CRLF line endings kept",
			files: map[string]string{
				"berth.yaml": strings.ReplaceAll(header+"apps:\n  - name: metrics\n    helm:\n      chart: oci://registry.local:5000/charts/metrics\n      version: 2.3.1\n", "\n", "\r\n"),
			},
			want: map[string]*string{
				"berth.yaml": ptr(strings.ReplaceAll(header+"apps:\n  - name: metrics\n    helm:\n      chart: oci://registry.local:5000/charts/metrics\n      version: 2.3.1\n      digest: "+d.chart+"\n", "\n", "\r\n")),
			},
		},
		{
			name:  "invalid berth.yaml",
			files: map[string]string{"berth.yaml": header + "apps:\n  - name: web\n    compose: {path: /abs}\n"},
			wantErr: []string{
				`berth.yaml:5: apps[0].compose.path: "/abs" must be a clean relative path`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeTree(t, tt.files)
			res, err := Lock(context.Background(), dir, r)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("Lock succeeded: %q", res.Overlay)
				}
				msg := err.Error()
				rest := msg
				for _, w := range tt.wantErr {
					i := strings.Index(rest, w)
					if i < 0 {
						t.Fatalf("error:\n%s\nwant (in order):\n%s", msg, strings.Join(tt.wantErr, "\n"))
					}
					rest = rest[i+len(w):]
				}
				if tt.check != nil {
					tt.check(t, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for p, want := range tt.want {
				got, ok := res.Overlay[p]
				switch {
				case want == nil && ok:
					t.Errorf("%s in the overlay:\n%s", p, got)
				case want != nil && !ok:
					t.Errorf("%s not in the overlay", p)
				case want != nil && string(got) != *want:
					t.Errorf("%s:\n%s\nwant:\n%s", p, got, *want)
				}
			}
			if tt.entries != nil && !reflect.DeepEqual(res.Lock, tt.entries) {
				t.Errorf("entries:\n%+v\nwant:\n%+v", res.Lock, tt.entries)
			}
			// The lock file says what Lock returned.
			var lf struct {
				APIVersion, Kind string
				Entries          []Entry
			}
			if err := json.Unmarshal(res.Overlay[LockFile], &lf); err != nil {
				t.Fatal(err)
			}
			if lf.APIVersion != "berth.dev/v1" || lf.Kind != "Lock" || !reflect.DeepEqual(lf.Entries, res.Lock) {
				t.Errorf("%s = %s", LockFile, res.Overlay[LockFile])
			}
			// The work tree is untouched.
			for p, content := range tt.files {
				got, err := os.ReadFile(filepath.Join(dir, p))
				if err != nil || string(got) != content {
					t.Errorf("%s changed", p)
				}
			}
		})
	}
}

func ptr(s string) *string { return &s }

func TestLockNoState(t *testing.T) {
	dir := writeTree(t, map[string]string{"README.md": "no state here\n"})
	res, err := Lock(context.Background(), dir, stubResolver{})
	if res != nil || err != nil {
		t.Fatalf("Lock = %v, %v; want nil, nil", res, err)
	}
	if _, err := Lock(context.Background(), filepath.Join(dir, "missing"), stubResolver{}); err == nil {
		t.Fatal("Lock of a missing folder succeeded")
	}
}

// TestLockResolverRefs checks the references given to the resolver.
func TestLockResolverRefs(t *testing.T) {
	r := &recordingResolver{}
	dir := writeTree(t, map[string]string{
		"berth.yaml": header + "apps:\n  - name: web\n    compose: {path: apps/web}\n  - name: m\n    helm: {chart: oci://ghcr.io/acme/charts/m, version: 1.0.0+b1}\n",
		webFile:      "services:\n  a: {image: nginx}\n  b: {image: acme/web:1}\n  c: {image: index.docker.io/acme/web:1}\n  d: {image: localhost/web}\n  e: {image: 'registry.local:5000/web:2'}\n  f: {image: nginx}\n",
	})
	res, err := Lock(context.Background(), dir, r)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"docker.io/acme/web:1",
		"docker.io/library/nginx:latest",
		"ghcr.io/acme/charts/m:1.0.0_b1",
		"localhost/web:latest",
		"registry.local:5000/web:2",
	}
	sort.Strings(r.seen)
	if !reflect.DeepEqual(r.seen, want) {
		t.Errorf("resolved %q, want %q (each once)", r.seen, want)
	}
	if len(res.Lock) != 7 {
		t.Errorf("%d entries, want 7", len(res.Lock))
	}
}

// TestLockSymlinkOut checks that a link out of the folder is refused.
func TestLockSymlinkOut(t *testing.T) {
	outside := writeTree(t, map[string]string{"compose.yaml": "services:\n  a: {image: nginx}\n"})
	dir := writeTree(t, map[string]string{"berth.yaml": webApp})
	if err := os.MkdirAll(filepath.Join(dir, "apps"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "apps", "web")); err != nil {
		t.Skip(err)
	}
	_, err := Lock(context.Background(), dir, stubResolver{})
	if err == nil || !strings.Contains(err.Error(), `lock berth.yaml:5 (app "web"): compose folder "apps/web"`) {
		t.Fatalf("err = %v", err)
	}
}

// TestLockDeterministic locks the same tree twice.
func TestLockDeterministic(t *testing.T) {
	dir := filepath.Join("testdata", "golden", "in")
	var first map[string][]byte
	for i := range 3 {
		res, err := Lock(context.Background(), dir, stubResolver{})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = res.Overlay
		} else if !reflect.DeepEqual(res.Overlay, first) {
			t.Fatal("two locks of the same tree differ")
		}
	}
}

// TestLockGolden locks testdata/golden/in against the test registry and
// compares the overlay with testdata/golden/out.
func TestLockGolden(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push("acme/web:1.2", staticImage(t, "web", "application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar"))
	reg.push("acme/api:2.0", staticImage(t, "api", "application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar"))
	reg.push("acme/cache:latest", staticImage(t, "cache", "application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar"))
	reg.pushIndex("acme/multi:1.0", staticIndex(t, "multi"))
	reg.push("acme/usbguard:0.9", staticImage(t, "usbguard", "application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar"))
	reg.push("charts/metrics:2.3.1", staticImage(t, "metrics", helmConfig, helmLayer))
	reg.push("charts/ui:1.0.0", staticImage(t, "ui", helmConfig, helmLayer))
	r := &registryResolver{reg: reg, hosts: map[string]bool{"registry.local:5000": true}}

	res, err := Lock(context.Background(), filepath.Join("testdata", "golden", "in"), r)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join("testdata", "golden", "out")
	if *update {
		if err := os.RemoveAll(out); err != nil {
			t.Fatal(err)
		}
		for p, data := range res.Overlay {
			full := filepath.Join(out, filepath.FromSlash(p))
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(full, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := map[string][]byte{}
	err = filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		rel, _ := filepath.Rel(out, p)
		want[filepath.ToSlash(rel)] = data
		return err
	})
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	for p, data := range res.Overlay {
		if !bytes.Equal(data, want[p]) {
			t.Errorf("%s:\n%s\nwant:\n%s", p, data, want[p])
		}
	}
	for p := range want {
		if _, ok := res.Overlay[p]; !ok {
			t.Errorf("%s not in the overlay", p)
		}
	}
}

type funcResolver func(ctx context.Context, ref string) (string, error)

func (f funcResolver) Resolve(ctx context.Context, ref string) (string, error) { return f(ctx, ref) }

// TestLockResolverFailures checks what a misbehaving or cancelled resolver
// gives.
func TestLockResolverFailures(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"berth.yaml": webApp,
		webFile:      "services:\n  api: {image: ghcr.io/acme/api:1}\n  web: {image: ghcr.io/acme/web:1}\n",
	})
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		r    Resolver
		want []string
		is   error
	}{
		{
			name: "not a digest",
			ctx:  context.Background(),
			r:    funcResolver(func(context.Context, string) (string, error) { return "sha256:ABC", nil }),
			want: []string{`lock apps/web/compose.yaml:2 (app "web", service "api"): image "ghcr.io/acme/api:1": the resolver returned "sha256:ABC", not a sha256 digest`},
		},
		{
			name: "cancelled",
			ctx:  cancelled,
			r:    stubResolver{},
			want: []string{`(app "web", service "api"): image "ghcr.io/acme/api:1": context canceled`, `(app "web", service "web"): image "ghcr.io/acme/web:1": context canceled`},
			is:   context.Canceled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Lock(tt.ctx, dir, tt.r)
			if err == nil {
				t.Fatal("Lock succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error:\n%v\nwant it to contain %s", err, w)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(err, %v) = false", tt.is)
			}
		})
	}
}
