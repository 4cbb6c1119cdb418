package e2e

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/testenv"
)

// mirrorReport is what berth mirror --output json prints: the contract
// scripts rely on.
type mirrorReport struct {
	Copied   int   `json:"copied"`
	UpToDate int   `json:"upToDate"`
	Failed   int   `json:"failed"`
	Bytes    int64 `json:"bytes"`
	Jobs     []struct {
		Name     string   `json:"name"`
		Listed   int      `json:"listed"`
		Selected int      `json:"selected"`
		Copied   int      `json:"copied"`
		UpToDate int      `json:"upToDate"`
		Failed   int      `json:"failed"`
		Bytes    int64    `json:"bytes"`
		Errors   []string `json:"errors"`
		Items    []struct {
			Source string `json:"source"`
			Target string `json:"target"`
			Digest string `json:"digest"`
			Status string `json:"status"`
			Error  string `json:"error"`
		} `json:"items"`
	} `json:"jobs"`
}

// site is an upstream registry (the env's, behind a proxy that pages tag
// lists), a plant registry behind a counting proxy, and a plain-HTTP
// replica, with one Docker config holding every credential.
type site struct {
	*env
	upProxy, plantProxy *testenv.Proxy
	plant, replica      *testenv.Registry
	dockerDir           string
	config              string // mirror.yaml
}

func newSite(t *testing.T) *site {
	t.Helper()
	s := &site{env: newEnv(t)}
	s.plant = testenv.StartRegistry(t, testenv.RegistryOptions{})
	s.replica = testenv.StartRegistry(t, testenv.RegistryOptions{Plain: true, NoAuth: true})
	s.upProxy = testenv.StartProxy(t, s.reg)
	s.upProxy.PaginateTags(2)
	s.plantProxy = testenv.StartProxy(t, s.plant)

	auths := map[string]map[string]string{}
	for _, r := range []struct {
		reg   *testenv.Registry
		hosts []string
	}{{s.reg, []string{s.reg.Host(), s.upProxy.Host()}}, {s.plant, []string{s.plant.Host(), s.plantProxy.Host()}}} {
		for _, h := range r.hosts {
			auths[h] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(r.reg.Username + ":" + r.reg.Password))}
		}
	}
	data, err := json.Marshal(map[string]any{"auths": auths})
	if err != nil {
		t.Fatal(err)
	}
	s.dockerDir = t.TempDir()
	if err := os.WriteFile(filepath.Join(s.dockerDir, "config.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	s.config = filepath.Join(t.TempDir(), "mirror.yaml")
	yaml := fmt.Sprintf(`# upstream → plant → replica
concurrency: 3
registries:
  - {host: "%[1]s", caFile: %[2]s}
  - {host: "%[3]s", caFile: %[4]s}
  - {host: "%[5]s", insecure: true}
jobs:
  - name: fleet
    source: %[1]s/fleet
    repositories: [line-3]
    targets: [%[3]s/site/fleet]
    semver: ">=1.0.0 <2.0.0"
  - name: images
    source: %[1]s/acme/hello
    targets: [%[3]s/site/acme/hello]
    tags: ["1.0.0"]
  - name: replica
    source: %[3]s/site/fleet/line-3
    targets: [%[5]s/site/fleet/line-3]
    filter: {pattern: '.*'}
    interval: 10s
`, s.upProxy.Host(), s.reg.CAFile, s.plantProxy.Host(), s.plant.CAFile, s.replica.Host())
	if err := os.WriteFile(s.config, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// runAt runs berth with the site's Docker config and the given extra
// flags (--ca-file or --insecure for the registry it talks to).
func (s *site) runAt(flags []string, args ...string) (string, string, int) {
	s.t.Helper()
	env := []string{"DOCKER_CONFIG=" + s.dockerDir, "COSIGN_PASSWORD=" + password}
	return testenv.Run(s.t, s.bin, env, append(args, flags...)...)
}

// mirror runs berth mirror --once --output json and decodes its report.
func (s *site) mirror(wantCode int) mirrorReport {
	s.t.Helper()
	out, errOut, code := s.runAt(nil, "mirror", "--config", s.config, "--once", "--output", "json")
	if code != wantCode {
		s.t.Fatalf("berth mirror: exit %d, want %d\nstdout: %s\nstderr: %s", code, wantCode, out, errOut)
	}
	var rep mirrorReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		s.t.Fatalf("berth mirror: stdout is not JSON: %v\n%s\nstderr: %s", err, out, errOut)
	}
	return rep
}

// plantFlags and replicaFlags reach the plant and replica registries.
func (s *site) plantFlags() []string   { return []string{"--ca-file", s.plant.CAFile} }
func (s *site) replicaFlags() []string { return []string{"--insecure"} }

// list returns the tags of oci://host/repo.
func (s *site) list(flags []string, url string) []string {
	s.t.Helper()
	out, errOut, code := s.runAt(flags, "list", url, "--output", "json")
	if code != 0 {
		s.t.Fatalf("berth list %s: exit %d: %s", url, code, errOut)
	}
	var tags []string
	if err := json.Unmarshal([]byte(out), &tags); err != nil {
		s.t.Fatal(err)
	}
	slices.Sort(tags)
	return tags
}

// verify runs berth verify and returns the format that verified.
func (s *site) verify(flags []string, url string) string {
	s.t.Helper()
	out, errOut, code := s.runAt(flags, "verify", url, "--key", s.pub, "--output", "json")
	var v struct {
		Verified bool   `json:"verified"`
		Format   string `json:"format"`
		Digest   string `json:"digest"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || !v.Verified {
		s.t.Fatalf("berth verify %s: exit %d\nstdout: %s\nstderr: %s", url, code, out, errOut)
	}
	return v.Format
}

// TestMirror keeps a plant registry and its replica in sync with an
// upstream: signed artifacts with semver tags and an index of two
// platforms, both signature formats, incremental passes, a new tag, and an
// upstream that is down.
func TestMirror(t *testing.T) {
	s := newSite(t)
	hello := testenv.BuildHello(t)
	idx := testenv.PushImage(t, s.reg, "acme/hello:1.0.0", hello, testenv.ImageOptions{Platforms: []string{"linux/amd64", "linux/arm64"}})
	s.ok("sign", s.url("acme/hello:1.0.0"), "--sign-key", s.key)
	repo := s.fleet(s.reg.Host() + "/acme/hello:1.0.0")

	// 1.0.0 bundle, 1.1.0 legacy, 1.2.0 both; 2.0.0 and canary are not
	// selected.
	digests := map[string]string{}
	push := func(tag, format string, extra ...string) {
		t.Helper()
		if len(digests) > 0 {
			if err := os.WriteFile(filepath.Join(repo, "NOTES"), []byte(tag+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			testenv.GitCommitAll(t, repo, testenv.GitOptions{Message: tag})
		}
		var res pushResult
		s.okJSON(&res, append([]string{"push", repo, s.url("fleet/line-3:" + tag), "--sign-key", s.key, "--signature-format", format}, extra...)...)
		digests[tag] = res.Digest
	}
	push("1.0.0", "bundle")
	push("1.1.0", "legacy")
	push("1.2.0", "bundle", "-t", "canary")
	s.ok("sign", s.url("fleet/line-3:1.2.0"), "--sign-key", s.key, "--signature-format", "legacy")
	push("2.0.0", "bundle")

	rep := s.mirror(0)
	if rep.Copied != 7 || rep.UpToDate != 0 || rep.Failed != 0 || rep.Bytes == 0 || len(rep.Jobs) != 3 {
		t.Fatalf("first pass: %+v", rep)
	}
	if j := rep.Jobs[0]; j.Name != "fleet" || j.Listed != 5 || j.Selected != 3 || j.Copied != 3 {
		t.Errorf("fleet job: %+v", j)
	}
	want := []string{"1.0.0", "1.1.0", "1.2.0"}
	plantURL := "oci://" + s.plantProxy.Host() + "/site/fleet/line-3"
	replicaURL := "oci://" + s.replica.Host() + "/site/fleet/line-3"
	if got := s.list(s.plantFlags(), plantURL); !slices.Equal(got, want) {
		t.Fatalf("plant tags %v, want %v", got, want)
	}
	if got := s.list(s.replicaFlags(), replicaURL); !slices.Equal(got, want) {
		t.Fatalf("replica tags %v, want %v", got, want)
	}
	formats := map[string]string{"1.0.0": "bundle", "1.1.0": "legacy", "1.2.0": "bundle"}
	for _, tag := range want {
		for _, at := range []struct {
			url   string
			flags []string
		}{{plantURL, s.plantFlags()}, {replicaURL, s.replicaFlags()}} {
			if f := s.verify(at.flags, at.url+"@"+digests[tag]); f != formats[tag] {
				t.Errorf("%s:%s verified with a %s signature, want %s", at.url, tag, f, formats[tag])
			}
		}
	}
	// 1.2.0 carries both formats: its legacy tag came along too.
	hex := strings.TrimPrefix(digests["1.2.0"], "sha256:")
	if _, err := remote.Head(s.plantRef(t, "/site/fleet/line-3:sha256-"+hex+".sig"), s.plantOpts()...); err != nil {
		t.Errorf("the legacy signature tag of 1.2.0 is not at the plant: %v", err)
	}
	// The image index: same digest, both platforms, its signature.
	imgURL := "oci://" + s.plantProxy.Host() + "/site/acme/hello"
	if f := s.verify(s.plantFlags(), imgURL+":1.0.0"); f != "bundle" {
		t.Errorf("image index verified with %s", f)
	}
	s.checkIndex(s.plantRef(t, "/site/acme/hello:1.0.0"), idx)

	// Nothing changed: nothing is written.
	s.plantProxy.Reset()
	rep = s.mirror(0)
	if rep.Copied != 0 || rep.UpToDate != 7 || rep.Bytes != 0 {
		t.Fatalf("second pass: %+v", rep)
	}
	for _, m := range []string{"POST", "PUT", "PATCH"} {
		if n := s.plantProxy.Count(m, "/v2/"); n != 0 {
			t.Errorf("an up-to-date pass sent %d %s requests to the plant", n, m)
		}
	}

	// A new release upstream reaches the plant and the replica.
	push("1.3.0", "legacy")
	s.plantProxy.Reset()
	rep = s.mirror(0)
	if rep.Copied != 2 || rep.UpToDate != 7 {
		t.Fatalf("pass after 1.3.0: %+v", rep)
	}
	if n := s.plantProxy.Count("PUT", "/v2/site/acme/"); n != 0 {
		t.Errorf("the unchanged image job wrote %d times", n)
	}
	s.verify(s.replicaFlags(), replicaURL+":1.3.0")

	// The upstream goes down: its jobs fail, the plant stays as it was,
	// the replica job goes on.
	s.upProxy.Stop()
	rep = s.mirror(1)
	fleet, images, replica := rep.Jobs[0], rep.Jobs[1], rep.Jobs[2]
	if len(fleet.Errors) != 1 || !strings.Contains(fleet.Errors[0], s.upProxy.Host()) || len(images.Errors) != 1 {
		t.Errorf("jobs of a dead upstream: fleet %+v, images %+v", fleet, images)
	}
	if replica.UpToDate != 4 || len(replica.Errors) != 0 {
		t.Errorf("replica job: %+v", replica)
	}
	if got := s.list(s.plantFlags(), plantURL); !slices.Equal(got, []string{"1.0.0", "1.1.0", "1.2.0", "1.3.0"}) {
		t.Errorf("plant tags after a failed pass: %v", got)
	}
	out, errOut, code := s.runAt(nil, "mirror", "--config", s.config, "--once")
	if code != 1 || !strings.Contains(out, "upstream unavailable, targets left as they were: list the tags of "+s.upProxy.Host()+"/fleet/line-3") ||
		!strings.Contains(out, "2 upstream repositories unavailable") || !strings.Contains(errOut, "level=ERROR") {
		t.Errorf("text run: exit %d, does not say what failed:\n%s\n%s", code, out, errOut)
	}
}

// plantRef is a go-containerregistry reference on the plant's proxy.
func (s *site) plantRef(t *testing.T, repoAndTag string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s.plantProxy.Host() + repoAndTag)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// plantOpts reach the plant registry with go-containerregistry.
func (s *site) plantOpts() []remote.Option {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: s.plant.CertPool(), MinVersion: tls.VersionTLS12}
	return []remote.Option{remote.WithTransport(tr), remote.WithAuth(&authn.Basic{Username: s.plant.Username, Password: s.plant.Password})}
}

// checkIndex checks that r is the index digest with every platform and
// every layer.
func (s *site) checkIndex(r name.Reference, digest string) {
	s.t.Helper()
	opts := s.plantOpts()
	idx, err := remote.Index(r, opts...)
	if err != nil {
		s.t.Fatalf("index %s: %v", r, err)
	}
	d, _ := idx.Digest()
	im, err := idx.IndexManifest()
	if err != nil || d.String() != digest || len(im.Manifests) != 2 {
		s.t.Fatalf("index %s: digest %s (want %s), %d manifests, %v", r, d, digest, len(im.Manifests), err)
	}
	for _, m := range im.Manifests {
		img, err := idx.Image(m.Digest)
		if err != nil {
			s.t.Fatal(err)
		}
		layers, err := img.Layers()
		if err != nil {
			s.t.Fatal(err)
		}
		for _, l := range layers {
			ld, _ := l.Digest()
			if _, err := remote.Layer(r.Context().Digest(ld.String()), opts...); err != nil {
				s.t.Errorf("platform %v: layer %s missing: %v", m.Platform, ld, err)
			}
		}
	}
}

// TestMirrorDaemon runs berth mirror as a service: it syncs at once,
// prints one JSON report per pass, and exits 0 on SIGTERM.
func TestMirrorDaemon(t *testing.T) {
	s := newSite(t)
	hello := testenv.BuildHello(t)
	testenv.PushImage(t, s.reg, "acme/hello:1.0.0", hello, testenv.ImageOptions{})
	p := testenv.StartProcess(t, testenv.RunOptions{Env: []string{"DOCKER_CONFIG=" + s.dockerDir}},
		s.bin, "mirror", "--config", s.config, "--output", "json", "--log-format", "json")
	testenv.Eventually(t, time.Minute, func() bool { return strings.Contains(p.Stdout(), "\n") }, "a first pass report")
	line, _, _ := strings.Cut(p.Stdout(), "\n")
	var rep mirrorReport
	if err := json.Unmarshal([]byte(line), &rep); err != nil {
		t.Fatalf("report line %q: %v", line, err)
	}
	if len(rep.Jobs) != 3 || rep.Jobs[1].Name != "images" || rep.Jobs[1].Copied != 1 {
		t.Errorf("first pass: %+v", rep)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.Wait(30 * time.Second); code != 0 {
		t.Errorf("berth mirror exited %d on SIGTERM\n%s", code, p.Stderr())
	}
	if !strings.Contains(p.Stderr(), `"msg":"mirror stopped"`) {
		t.Errorf("no stop in the log:\n%s", p.Stderr())
	}
}

// TestMirrorConfig: --check-config names the jobs; a bad file is refused
// with the file, line and field of every problem, before any registry is
// reached.
func TestMirrorConfig(t *testing.T) {
	bin := testenv.BuildBerth(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "mirror.yaml")
	if err := os.WriteFile(good, []byte("jobs:\n  - {name: a, source: a.example/x, targets: [b.example/x], tags: [v1]}\n  - {source: a.example, repositories: [y, z], targets: [b.example], semver: '>=1'}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := testenv.Run(t, bin, nil, "mirror", "--config", good, "--check-config", "--output", "json")
	var check struct {
		File   string   `json:"file"`
		Jobs   []string `json:"jobs"`
		Routes int      `json:"routes"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &check) != nil || !slices.Equal(check.Jobs, []string{"a", "a.example"}) || check.Routes != 3 {
		t.Errorf("check-config: exit %d, %+v\n%s%s", code, check, out, errOut)
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("jobs:\n  - source: a.example/x\n    targets: [b.example/x]\n    tag: [v1]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = testenv.Run(t, bin, nil, "mirror", "--config", bad, "--once")
	if code == 0 || !strings.Contains(errOut, bad+`:4: jobs[0]: unknown field "tag" (did you mean "tags"?)`) {
		t.Errorf("bad config: exit %d\n%s", code, errOut)
	}
	_, errOut, code = testenv.Run(t, bin, nil, "mirror", "--once")
	if code == 0 || !strings.Contains(errOut, "--config") {
		t.Errorf("no config: exit %d\n%s", code, errOut)
	}
}
