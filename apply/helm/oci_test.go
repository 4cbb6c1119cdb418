package helm

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/registry"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/source/mirror"
)

// packageChart packages chart files the way `helm package` does and
// returns the archive.
func packageChart(t *testing.T, files map[string]string) []byte {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "chart")
	for p, c := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := loader.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out, err := chartutil.Save(ch, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// pushChart pushes a chart archive to reg as repo:version with Helm's own
// registry client (what `helm push` does) and returns the manifest digest.
func pushChart(t *testing.T, reg *testenv.Registry, repo, version string, archive []byte) string {
	t.Helper()
	c, err := registry.NewClient(
		registry.ClientOptHTTPClient(reg.HTTPClient()),
		registry.ClientOptBasicAuth(reg.Username, reg.Password),
		registry.ClientOptCredentialsFile(filepath.Join(t.TempDir(), "helm-registry.json")),
		registry.ClientOptWriter(io.Discard),
	)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Push(archive, reg.Ref(repo+":"+version), registry.PushOptCreationTime("2026-01-02T03:04:05Z"))
	if err != nil {
		t.Fatalf("helm push to %s: %v", reg.Ref(repo), err)
	}
	return res.Manifest.Digest
}

// trustBoth writes one CA bundle and one Docker config for two registries.
func trustBoth(t *testing.T, regs ...*testenv.Registry) (caFile, dockerConfig string) {
	t.Helper()
	dir := t.TempDir()
	var bundle []byte
	auths := map[string]map[string]string{}
	for _, r := range regs {
		ca, err := os.ReadFile(r.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		bundle = append(bundle, ca...)
		auths[r.Host()] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(r.Username + ":" + r.Password))}
	}
	caFile = filepath.Join(dir, "ca.pem")
	dockerConfig = filepath.Join(dir, "config.json")
	data, _ := json.Marshal(map[string]any{"auths": auths})
	if err := os.WriteFile(caFile, bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dockerConfig, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return caFile, dockerConfig
}

// berthRequests counts berth's requests in the registry's access log, of
// method and status when given, whose URI starts with uri.
func berthRequests(reg *testenv.Registry, method, uri string, status int) int {
	n := 0
	for _, r := range reg.Requests() {
		if r.UserAgent == "berth" && (method == "" || r.Method == method) && strings.HasPrefix(r.URI, uri) && (status == 0 || r.Status == status) {
			n++
		}
	}
	return n
}

// TestOCIChart installs a chart pushed with Helm's registry client by its
// digest, refuses a wrong or missing digest, and pulls through a mirror.
func TestOCIChart(t *testing.T) {
	k := testenv.StartKube(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	mir := testenv.StartRegistry(t, testenv.RegistryOptions{})
	archive := packageChart(t, helloChart("0.2.0+build.1"))
	digest := pushChart(t, reg, "charts/hello", "0.2.0+build.1", archive)
	if d := pushChart(t, mir, "charts/hello", "0.2.0+build.1", archive); d != digest {
		t.Fatalf("mirror digest %s != %s", d, digest)
	}
	caFile, dockerConfig := trustBoth(t, reg, mir)
	chart := "oci://" + reg.Host() + "/charts/hello"
	state := func(ns, dgst string) string {
		s := "chart: " + chart + ", version: 0.2.0+build.1, namespace: " + ns
		if dgst != "" {
			s += ", digest: " + dgst
		}
		return helmState(s)
	}
	a := newApplier(t, k, Options{CAFile: caFile, DockerConfig: dockerConfig})

	t.Run("wrong digest", func(t *testing.T) {
		wrong := "sha256:" + strings.Repeat("0", 64)
		mark := k.Mark()
		sts, err := apply(t, a, revision(t, "oci", "wrong", state("oci", wrong), nil), nil)
		if !errors.Is(err, ErrChartDigest) {
			t.Fatalf("err = %v, want ErrChartDigest", err)
		}
		for _, want := range []string{chart, "0.2.0+build.1", wrong, digest} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not name %s: %v", want, err)
			}
		}
		if sts[0].Outcome != OutcomeFailed {
			t.Errorf("status = %+v", sts[0])
		}
		noWrites(t, k, mark, "a refused chart")
		if n := len(releaseSecrets(t, k, "oci", "hello")); n != 0 {
			t.Errorf("%d release revisions", n)
		}
	})

	t.Run("no digest", func(t *testing.T) {
		before := berthRequests(reg, "", "", 0)
		_, err := apply(t, a, revision(t, "oci", "none", state("oci", ""), nil), nil)
		if !errors.Is(err, ErrNoDigest) || !strings.Contains(err.Error(), chart) {
			t.Fatalf("err = %v, want ErrNoDigest naming the chart", err)
		}
		if n := berthRequests(reg, "", "", 0) - before; n != 0 {
			t.Errorf("%d registry requests for an unpinned chart", n)
		}
	})

	t.Run("by digest", func(t *testing.T) {
		byTag := berthRequests(reg, "", "/v2/charts/hello/manifests/0.2.0_build.1", 0)
		sts := mustApply(t, a, revision(t, "oci", "ok", state("oci", digest), nil), nil)
		d := detail(t, sts[0])
		if d.ChartDigest != digest || d.Mirror != "" || d.Chart != "hello" || d.ChartVersion != "0.2.0+build.1" || d.Revision != 1 {
			t.Errorf("detail = %+v", d)
		}
		if got := configMap(t, k, "oci", "hello-config")["greeting"]; got != "chart-default" {
			t.Errorf("greeting = %q", got)
		}
		if n := berthRequests(reg, "GET", "/v2/charts/hello/manifests/"+digest, 200); n != 1 {
			t.Errorf("berth fetched the manifest by digest %d times, want 1", n)
		}
		if n := berthRequests(reg, "", "/v2/charts/hello/manifests/0.2.0_build.1", 0) - byTag; n != 0 {
			t.Errorf("%d manifest requests by tag, want none", n)
		}
	})

	t.Run("through a mirror", func(t *testing.T) {
		b := newApplier(t, k, Options{CAFile: caFile, DockerConfig: dockerConfig, Mirrors: mirrors(t, mirror.Set{
			Source:         reg.Host() + "/charts",
			Mirrors:        []string{mir.Host() + "/charts"},
			SourceFallback: true,
		})})
		reg.Stop() // only the mirror can serve it
		defer reg.Start()
		sts := mustApply(t, b, revision(t, "oci-mirror", "ok", state("oci-mirror", digest), nil), nil)
		d := detail(t, sts[0])
		if d.ChartDigest != digest || d.Mirror != mir.Host()+"/charts" {
			t.Errorf("detail = %+v, want the chart from the mirror", d)
		}
		if configMap(t, k, "oci-mirror", "hello-config") == nil {
			t.Error("no ConfigMap")
		}
	})
}

// mirrors is the resolver of sets (the agent builds one from its
// configuration's registries:, which package mirror checks).
func mirrors(t *testing.T, sets ...mirror.Set) *mirror.Resolver {
	t.Helper()
	r, err := mirror.New(sets)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
