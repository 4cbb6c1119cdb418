package materialize

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"helm.sh/helm/v3/pkg/chart/loader"

	"github.com/berth-dev/berth/internal/errdef"
	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/margo/pack"
	"github.com/berth-dev/berth/source/margo/spec"
	"github.com/berth-dev/berth/source/oci"
)

// env is an in-process registry that counts requests and can alter the
// blobs it serves, as a lying mirror would.
type env struct {
	host     string
	c        *oci.Client
	requests atomic.Int64
	tamper   atomic.Bool
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.requests.Add(1)
		if e.tamper.Load() && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			rec := httptest.NewRecorder()
			reg.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			if len(body) > 0 {
				body[len(body)/2] ^= 1
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(body)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	c, err := oci.NewClient(oci.Options{Insecure: true, DockerConfig: filepath.Join(t.TempDir(), "config.json")})
	if err != nil {
		t.Fatal(err)
	}
	e.host, e.c = strings.TrimPrefix(srv.URL, "http://"), c
	return e
}

// unverified is the Fetcher of tests that check no signature.
func unverified(c *oci.Client) Fetcher {
	return Registry{Remote: &deliver.Remote{Client: c}, Insecure: true}
}

// composeArchive pushes a Compose Archive of files to repo:tag.
func (e *env) composeArchive(t *testing.T, repo, tag string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, content := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		os.MkdirAll(filepath.Dir(full), 0o755)
		os.WriteFile(full, []byte(content), 0o644)
	}
	ref, _ := oci.ParseReference("oci://" + e.host + "/" + repo + ":" + tag)
	p, err := pack.PushComposeArchive(context.Background(), e.c, pack.ComposeOptions{Dir: dir, Ref: ref})
	if err != nil {
		t.Fatal(err)
	}
	return p.Digest
}

// rawArtifact pushes a manifest of artifactType with the given layers.
func (e *env) rawArtifact(t *testing.T, repo, tag, artifactType string, layers map[string][]byte, order []string) {
	t.Helper()
	ref, _ := oci.ParseReference("oci://" + e.host + "/" + repo)
	r, err := e.c.Repository(ref)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	push := func(mt string, data []byte) ocispec.Descriptor {
		d := ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(data), Size: int64(len(data))}
		if err := r.Push(ctx, d, bytes.NewReader(data)); err != nil && !strings.Contains(err.Error(), "exist") {
			t.Fatal(err)
		}
		return d
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: artifactType, Config: push(ocispec.MediaTypeEmptyJSON, []byte("{}"))}
	m.SchemaVersion = 2
	for _, mt := range order {
		m.Layers = append(m.Layers, push(strings.SplitN(mt, "#", 2)[0], layers[mt]))
	}
	raw := mustJSON(t, m)
	if err := r.PushReference(ctx, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(raw), Size: int64(len(raw))}, bytes.NewReader(raw), tag); err != nil {
		t.Fatal(err)
	}
}

func tgz(t *testing.T, entries ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, h := range entries {
		body := "services: {}\n"
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		h.ModTime = time.Unix(0, 0)
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(body))
		}
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func deployment(t *testing.T, yaml string) *spec.Deployment {
	t.Helper()
	d, err := spec.ParseDeployment("d.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func composeDeployment(id, name, host, repo, rev string, extra string) string {
	return fmt.Sprintf(`id: %s
metadata: {name: %s, namespace: margo-apps, deviceId: press-42}
spec:
  applicationId: acme
  deploymentProfile:
    type: compose
    components:
      - name: web
        properties: {repository: oci://%s/%s, revision: %s}
%s`, id, name, host, repo, rev, extra)
}

const (
	idA = "0b6c1f1e-2a44-4c7e-9d51-7e3f5a0c9b21"
	idB = "1b6c1f1e-2a44-4c7e-9d51-7e3f5a0c9b21"
)

func caps() *spec.Capabilities {
	return &spec.Capabilities{Properties: spec.CapabilityProperties{ID: "press-42", CPUs: []spec.CPU{{Cores: 2, Architecture: "amd64"}}, Memory: "4Gi", Storage: "10Gi", SupportedDeploymentTypes: []string{"compose", "helm"}}, Labels: map[string]string{"line": "7"}}
}

func (e *env) opts(t *testing.T) Options {
	return Options{
		Dir: filepath.Join(t.TempDir(), "rev"), Source: "margo", DeviceID: "press-42", Types: []string{"compose", "helm"},
		Capabilities: caps(), Fetcher: unverified(e.c), ManifestVersion: 7,
	}
}

func TestMaterializeCompose(t *testing.T) {
	e := newEnv(t)
	e.composeArchive(t, "acme/web", "1.0.0", map[string]string{"compose.yaml": "services: {web: {image: x:1}}\n", "conf/a.env": "A=1\n"})
	params := `  parameters:
    greeting: {value: hello, targets: [{pointer: GREETING, components: [web]}]}
    port: {value: 8080, targets: [{pointer: ENV.WEB_PORT, components: [web]}]}
    debug: {value: true, targets: [{pointer: DEBUG, components: [web]}]}
`
	d := deployment(t, composeDeployment(idA, "line-monitor", e.host, "acme/web", "1.0.0", params))
	o := e.opts(t)
	res, err := Materialize(context.Background(), []Deployment{{Digest: "sha256:aa", Deployment: d}}, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Failed) != 0 {
		t.Fatalf("failed: %+v", res.Failed)
	}
	apps := res.Revision.State.Apps
	if len(apps) != 1 || apps[0].Name != "line-monitor-web" || apps[0].Compose == nil {
		t.Fatalf("apps = %+v", apps)
	}
	c := apps[0].Compose
	wantEnv := map[string]string{"GREETING": "hello", "WEB_PORT": "8080", "DEBUG": "true"}
	if !reflect.DeepEqual(c.Env, wantEnv) || c.Path != "apps/line-monitor-web/web" || !reflect.DeepEqual(c.Files, []string{"compose.yaml"}) {
		t.Errorf("compose = %+v", c)
	}
	if _, err := c.ConfigFiles(os.DirFS(res.Revision.Dir)); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(res.Revision.Dir, c.Path, "conf/a.env")); err != nil {
		t.Error(err)
	}
	if res.Revision.Source != "margo" || !spec.ValidDigest(res.Revision.Digest) {
		t.Errorf("revision = %+v", res.Revision)
	}
	// The plan is reloaded identically after a restart.
	p, rev, err := LoadPlan("margo", res.Revision.Dir)
	if err != nil || !reflect.DeepEqual(rev, res.Revision) || !reflect.DeepEqual(p, res.Plan) {
		t.Errorf("LoadPlan = %+v, %+v, %v", p, rev, err)
	}
	if dep, comp, ok := res.Plan.Find("line-monitor-web"); !ok || dep.ID != idA || comp.Name != "web" || !strings.HasPrefix(comp.Digest, "sha256:") {
		t.Errorf("Find = %+v %+v %v", dep, comp, ok)
	}
	// Same input, same revision digest.
	o2 := o
	o2.Dir = filepath.Join(t.TempDir(), "rev")
	res2, err := Materialize(context.Background(), []Deployment{{Digest: "sha256:aa", Deployment: d}}, o2)
	if err != nil || res2.Revision.Digest != res.Revision.Digest {
		t.Errorf("digest %s then %s (%v)", res.Revision.Digest, res2.Revision.Digest, err)
	}
	// The target must not exist.
	if _, err := Materialize(context.Background(), nil, o); err == nil {
		t.Error("materialized over an existing folder")
	}
}

func TestMaterializeHelm(t *testing.T) {
	e := newEnv(t)
	chartDir := t.TempDir()
	os.MkdirAll(filepath.Join(chartDir, "helm/monitor/templates"), 0o755)
	os.WriteFile(filepath.Join(chartDir, "helm/monitor/Chart.yaml"), []byte("apiVersion: v2\nname: monitor\nversion: 0.3.0+b1\n"), 0o644)
	os.WriteFile(filepath.Join(chartDir, "margo.yaml"), []byte(`id: acme
metadata: {name: m, version: 1.0.0}
deploymentProfiles:
  - type: helm
    components: [{name: monitor, properties: {repository: oci://`+e.host+`/charts/monitor, revision: 0.3.0_b1}}]
`), 0o644)
	ref, _ := oci.ParseReference("oci://" + e.host + "/apps/m")
	pushed, err := pack.PushPackage(context.Background(), e.c, pack.PackageOptions{Dir: chartDir, Ref: ref})
	if err != nil {
		t.Fatal(err)
	}
	d := deployment(t, `id: `+idB+`
metadata: {name: monitor, namespace: ot}
spec:
  applicationId: acme
  deploymentProfile:
    type: helm
    components:
      - name: monitor
        properties: {repository: oci://`+e.host+`/charts/monitor, revision: 0.3.0_b1, wait: false, timeout: 2m30s}
  parameters:
    cpu: {value: 250m, targets: [{pointer: settings.limits.cpu, components: [monitor]}]}
    replicas: {value: 3, targets: [{pointer: replicaCount, components: [monitor]}, {pointer: /ui/replicas, components: [monitor]}]}
    list: {value: a, targets: [{pointer: "items[1]", components: [monitor]}]}
`)
	res, err := Materialize(context.Background(), []Deployment{{Digest: "sha256:bb", Deployment: d}}, e.opts(t))
	if err != nil || len(res.Failed) != 0 {
		t.Fatalf("%v %+v", err, res)
	}
	// The chart is extracted into the revision, pinned by the digest the
	// plan records: the applier loads the folder, no registry needed.
	h := res.Revision.State.Apps[0].Helm
	if h == nil || h.Path != "apps/monitor-monitor/monitor" || h.Chart != "" || h.Digest != "" || h.Namespace != "ot" || h.ReleaseName != "monitor-monitor" || h.Wait || h.Timeout != 150*time.Second {
		t.Fatalf("helm = %+v", h)
	}
	if c := res.Plan.Deployments[0].Components[0]; c.Digest != pushed.Components[0].Digest || c.Path != h.Path {
		t.Errorf("plan component = %+v, want digest %s", c, pushed.Components[0].Digest)
	}
	if ch, err := loader.LoadDir(filepath.Join(res.Revision.Dir, "apps/monitor-monitor/monitor")); err != nil || ch.Name() != "monitor" || ch.Metadata.Version != "0.3.0+b1" {
		t.Errorf("the chart folder in the revision does not load as the chart: %v", err)
	}
	// A plan written before charts were extracted (no path) still names
	// the chart by digest.
	old := *res.Plan
	old.Deployments = []PlanDeployment{res.Plan.Deployments[0]}
	old.Deployments[0].Components = []PlanComponent{res.Plan.Deployments[0].Components[0]}
	old.Deployments[0].Components[0].Path = ""
	if h := old.DeviceState().Apps[0].Helm; h.Chart != "oci://"+e.host+"/charts/monitor" || h.Version != "0.3.0+b1" || h.Digest != pushed.Components[0].Digest || h.Path != "" {
		t.Errorf("helm of an old plan = %+v", h)
	}
	want := map[string]any{
		"settings":     map[string]any{"limits": map[string]any{"cpu": "250m"}},
		"replicaCount": int64(3),
		"ui":           map[string]any{"replicas": int64(3)},
		"items":        []any{nil, "a"},
	}
	got := fmt.Sprint(h.Values)
	if fmt.Sprint(want) != got {
		t.Errorf("values = %s, want %s", got, fmt.Sprint(want))
	}
}

func TestMaterializeRefused(t *testing.T) {
	e := newEnv(t)
	good := e.composeArchive(t, "acme/web", "1.0.0", map[string]string{"compose.yaml": "services: {}\n"})
	_ = good
	e.composeArchive(t, "acme/noyaml", "1.0.0", map[string]string{"compose.yaml": "services: {}\n"})
	reg := func(name string, files ...*tar.Header) {
		e.rawArtifact(t, "acme/"+name, "1.0.0", ComposeArtifactType, map[string][]byte{ComposeLayerType: tgz(t, files...)}, []string{ComposeLayerType})
	}
	reg("traversal", &tar.Header{Name: "web/compose.yaml", Typeflag: tar.TypeReg, Mode: 0o644}, &tar.Header{Name: "web/../../etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644})
	reg("twotop", &tar.Header{Name: "a/compose.yaml", Typeflag: tar.TypeReg, Mode: 0o644}, &tar.Header{Name: "b/compose.yaml", Typeflag: tar.TypeReg, Mode: 0o644})
	reg("ymlname", &tar.Header{Name: "web/docker-compose.yml", Typeflag: tar.TypeReg, Mode: 0o644})
	reg("linkout", &tar.Header{Name: "web/compose.yaml", Typeflag: tar.TypeReg, Mode: 0o644}, &tar.Header{Name: "web/up", Typeflag: tar.TypeSymlink, Linkname: ".."})
	reg("hardlink", &tar.Header{Name: "web/compose.yaml", Typeflag: tar.TypeReg, Mode: 0o644}, &tar.Header{Name: "web/h", Typeflag: tar.TypeLink, Linkname: "web/compose.yaml"})
	e.rawArtifact(t, "acme/flux", "1.0.0", "", map[string][]byte{oci.ContentMediaType: tgz(t, &tar.Header{Name: "web/compose.yaml", Typeflag: tar.TypeReg, Mode: 0o644})}, []string{oci.ContentMediaType})
	e.rawArtifact(t, "acme/twolayers", "1.0.0", ComposeArtifactType, map[string][]byte{ComposeLayerType: tgz(t, &tar.Header{Name: "web/compose.yaml", Typeflag: tar.TypeReg, Mode: 0o644}), ComposeLayerType + "#2": []byte("x")}, []string{ComposeLayerType, ComposeLayerType + "#2"})

	tests := []struct {
		name, repo, extra string
		code, want        string
		refused           bool
		mutate            func(*Options)
	}{
		{name: "traversal entry", repo: "acme/traversal", code: CodeRefused, want: "unsafe path", refused: true},
		{name: "two top-level folders", repo: "acme/twotop", code: CodeRefused, want: "exactly one top-level folder", refused: true},
		{name: "docker-compose.yml", repo: "acme/ymlname", code: CodeRefused, want: "compose.yaml is missing", refused: true},
		{name: "link out of the top folder", repo: "acme/linkout", code: CodeRefused, want: "leaves the folder web", refused: true},
		{name: "hard link", repo: "acme/hardlink", code: CodeRefused, want: "hard links", refused: true},
		{name: "not a compose artifact", repo: "acme/flux", code: CodeRefused, want: "artifact type", refused: true},
		{name: "two layers", repo: "acme/twolayers", code: CodeRefused, want: "exactly one layer", refused: true},
		{name: "missing revision", repo: "acme/nothere", code: CodeFetch, want: "resolve"},
		{name: "altered layer", repo: "acme/web", code: CodeRefused, want: "digest mismatch", refused: true, mutate: func(*Options) { e.tamper.Store(true) }},
		{name: "not eligible", repo: "acme/web", code: CodeNotEligible, want: "needs 64 CPU cores", extra: "    deviceConstraints: {capacityRequirements: {cpu: {cores: 64}}}\n"},
		{name: "no matching rule", repo: "acme/web", code: CodeNotEligible, want: "no eligibility rule matches", extra: "    deviceConstraints:\n      eligibilityRules: [{labelSelector: {matchExpressions: [{key: line, operator: In, values: ['9']}]}}]\n"},
		{name: "compose not configured", repo: "acme/web", code: CodeUnsupported, want: "this device deploys helm", mutate: func(o *Options) { o.Types = []string{"helm"} }},
		{name: "other device", repo: "acme/web", code: CodeWrongDevice, want: `targets device "press-42", this device is "press-43"`, mutate: func(o *Options) { o.DeviceID = "press-43" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := e.opts(t)
			if tt.mutate != nil {
				tt.mutate(&o)
			}
			defer e.tamper.Store(false)
			yaml := composeDeployment(idA, "app", e.host, tt.repo, "1.0.0", "")
			if tt.extra != "" {
				yaml = strings.Replace(yaml, "  deploymentProfile:\n", "  deploymentProfile:\n"+tt.extra, 1)
			}
			res, err := Materialize(context.Background(), []Deployment{{Digest: "sha256:aa", Deployment: deployment(t, yaml)}}, o)
			if err != nil {
				t.Fatal(err)
			}
			f, ok := res.Failed[idA]
			if !ok || f.Code != tt.code || !strings.Contains(f.Err.Error(), tt.want) || f.Carried {
				t.Fatalf("failure = %+v (ok %v), want code %s and %q", f, ok, tt.code, tt.want)
			}
			if errors.Is(f.Err, errdef.ErrRefused) != tt.refused {
				t.Errorf("refused class = %v", !tt.refused)
			}
			if len(res.Revision.State.Apps) != 0 {
				t.Errorf("apps = %+v", res.Revision.State.Apps)
			}
			if _, err := os.Stat("/etc/passwd.berth-test"); err == nil {
				t.Error("wrote outside")
			}
			entries, _ := os.ReadDir(res.Revision.Dir)
			for _, en := range entries {
				if en.Name() != PlanFile {
					t.Errorf("left %s in the revision", en.Name())
				}
			}
		})
	}
}

// TestCarryOver: a deployment whose update is refused keeps the previous
// revision's apps (and their files), so nothing that runs is removed.
func TestCarryOver(t *testing.T) {
	e := newEnv(t)
	e.composeArchive(t, "acme/web", "1.0.0", map[string]string{"compose.yaml": "services: {v1: {image: x:1}}\n"})
	e.composeArchive(t, "acme/other", "1.0.0", map[string]string{"compose.yaml": "services: {o: {image: x:1}}\n"})
	a1 := deployment(t, composeDeployment(idA, "app", e.host, "acme/web", "1.0.0", ""))
	b1 := deployment(t, composeDeployment(idB, "other", e.host, "acme/other", "1.0.0", ""))
	o1 := e.opts(t)
	prev, err := Materialize(context.Background(), []Deployment{{Digest: "sha256:a1", Deployment: a1}, {Digest: "sha256:b1", Deployment: b1}}, o1)
	if err != nil || len(prev.Failed) != 0 {
		t.Fatal(err, prev.Failed)
	}
	// v2 of A points at a revision that does not exist; B is unchanged.
	a2 := deployment(t, composeDeployment(idA, "app", e.host, "acme/web", "2.0.0", ""))
	o2 := e.opts(t)
	o2.Previous, o2.PreviousDir = prev.Plan, prev.Revision.Dir
	res, err := Materialize(context.Background(), []Deployment{{Digest: "sha256:a2", Deployment: a2}, {Digest: "sha256:b1", Deployment: b1}}, o2)
	if err != nil {
		t.Fatal(err)
	}
	if f := res.Failed[idA]; !f.Carried || f.Code != CodeFetch {
		t.Fatalf("failure = %+v", f)
	}
	if !reflect.DeepEqual(res.Revision.State.Apps, prev.Revision.State.Apps) {
		t.Errorf("apps = %+v, want the previous ones", res.Revision.State.Apps)
	}
	data, err := os.ReadFile(filepath.Join(res.Revision.Dir, res.Revision.State.Apps[0].Compose.Path, "compose.yaml"))
	if err != nil || !strings.Contains(string(data), "v1") {
		t.Errorf("carried compose.yaml = %q, %v", data, err)
	}
	if !res.Plan.Deployments[0].Carried || res.Plan.Deployments[0].Digest != "sha256:a1" {
		t.Errorf("plan = %+v", res.Plan.Deployments[0])
	}
	_ = archive.Limits{}
}

// TestCheckChart: an extracted chart archive is taken only with one
// top-level folder whose regular Chart.yaml names the component's chart
// (the repository's last segment) at its version; anything else is
// refused as not a chart.
func TestCheckChart(t *testing.T) {
	chart := "apiVersion: v2\nname: monitor\nversion: 0.3.0+b1\n"
	for _, tc := range []struct {
		name  string
		files map[string]string // "" content: a folder
		err   string
	}{
		{"good", map[string]string{"monitor/Chart.yaml": chart, "monitor/templates/cm.yaml": "x"}, ""},
		{"other folder name", map[string]string{"chart/Chart.yaml": chart}, ""},
		{"two folders", map[string]string{"monitor/Chart.yaml": chart, "extra/": ""}, "exactly one top-level folder"},
		{"a file at the top", map[string]string{"Chart.yaml": chart}, "exactly one top-level folder"},
		{"no Chart.yaml", map[string]string{"monitor/values.yaml": "a: 1"}, "Chart.yaml"},
		{"Chart.yaml a folder", map[string]string{"monitor/Chart.yaml/": ""}, "not a regular file"},
		{"other chart", map[string]string{"monitor/Chart.yaml": "name: other\nversion: 0.3.0+b1\n"}, `holds chart "other" version "0.3.0+b1"`},
		{"other version", map[string]string{"monitor/Chart.yaml": "name: monitor\nversion: 0.3.0\n"}, "want monitor version 0.3.0+b1"},
		{"not YAML", map[string]string{"monitor/Chart.yaml": "name: [\n"}, "Chart.yaml"},
		{"too large", map[string]string{"monitor/Chart.yaml": chart + strings.Repeat("#", maxChartFile)}, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for p, content := range tc.files {
				full := filepath.Join(dir, filepath.FromSlash(p))
				if strings.HasSuffix(p, "/") {
					os.MkdirAll(full, 0o755)
					continue
				}
				os.MkdirAll(filepath.Dir(full), 0o755)
				os.WriteFile(full, []byte(content), 0o644)
			}
			top, err := checkChart(dir, "monitor", "0.3.0+b1")
			switch {
			case tc.err == "" && (err != nil || top == ""):
				t.Fatalf("refused a good chart: %v", err)
			case tc.err != "" && (!errors.Is(err, ErrNotChart) || !errors.Is(err, errdef.ErrRefused) || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("err = %v, want ErrNotChart saying %q", err, tc.err)
			}
		})
	}
}
