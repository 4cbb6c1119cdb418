package e2e

import (
	"archive/tar"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

// airgap is the plant of issue 6: an upstream registry on the host's
// loopback, which the device cannot reach; plant registries on the host
// end of a veth pair, the only address the device's network namespace
// routes to; a Docker Engine; and a device agent run inside the namespace.
type airgap struct {
	*env
	ns       *testenv.Netns
	docker   *testenv.DockerEngine
	repo     string // the publisher's Git repository
	image    string // upstream image reference (tag) the app runs
	port     int    // the app's published port on 127.0.0.1
	digest   string // the state artifact's digest
	dir      string
	caFile   string // every test CA, for the device and berth mirror
	dockerDC string // a Docker config dir with every registry's credentials
}

func newAirgap(t *testing.T) *airgap {
	t.Helper()
	e := newEnv(t) // the upstream registry: e.reg, on 127.0.0.1
	a := &airgap{env: e, ns: testenv.NewNetns(t), docker: testenv.Docker(t), port: freePort(t), dir: t.TempDir()}
	a.image = e.reg.Host() + "/acme/hello:v1"
	testenv.PushImage(t, e.reg, a.image, testenv.BuildHello(t), testenv.ImageOptions{Labels: map[string]string{"dev.berth.test.version": "airgap"}})
	a.repo = e.fleet(a.image)
	a.setMessage("from the plant")
	var res pushResult
	e.okJSON(&res, "push", a.repo, e.url("fleet/line-3:stable"), "--sign-key", e.key)
	a.digest = res.Digest

	t.Cleanup(func() { a.docker.RemoveProjectResources(t, "berth-line-3-") })
	a.cleanDevice()
	a.trust(e.reg)
	return a
}

// setMessage makes the example app answer msg and commits.
func (a *airgap) setMessage(msg string) {
	a.t.Helper()
	compose := filepath.Join(a.repo, "apps", "web", "compose.yaml")
	b, err := os.ReadFile(compose)
	if err != nil {
		a.t.Fatal(err)
	}
	s := strings.ReplaceAll(string(b), "127.0.0.1:8088:8080", fmt.Sprintf("127.0.0.1:%d:8080", a.port))
	s = strings.ReplaceAll(s, `MESSAGE: "hello from berth"`, fmt.Sprintf("MESSAGE: %q", msg))
	if !strings.Contains(s, fmt.Sprintf("127.0.0.1:%d:8080", a.port)) || !strings.Contains(s, msg) {
		a.t.Fatalf("examples/compose-hello changed: no 127.0.0.1:8088:8080 or MESSAGE to rewrite:\n%s", b)
	}
	if err := os.WriteFile(compose, []byte(s), 0o644); err != nil {
		a.t.Fatal(err)
	}
	testenv.GitCommitAll(a.t, a.repo, testenv.GitOptions{Message: msg})
}

// plant starts a registry the device can reach, and lets the engine and
// the device trust it.
func (a *airgap) plant() *testenv.Registry {
	a.t.Helper()
	r := testenv.StartRegistry(a.t, testenv.RegistryOptions{IP: a.ns.HostIP})
	a.trust(r)
	return r
}

// trust adds r's CA to the shared CA file and its credentials to the
// shared Docker config, and makes the engine trust it.
func (a *airgap) trust(r *testenv.Registry) {
	a.t.Helper()
	a.docker.TrustRegistry(a.t, r)
	if a.caFile == "" {
		a.caFile = filepath.Join(a.dir, "ca.pem")
		a.dockerDC = filepath.Join(a.dir, "docker")
		if err := os.MkdirAll(a.dockerDC, 0o700); err != nil {
			a.t.Fatal(err)
		}
	}
	ca, err := os.ReadFile(r.CAFile)
	if err != nil {
		a.t.Fatal(err)
	}
	f, err := os.OpenFile(a.caFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		a.t.Fatal(err)
	}
	_, _ = f.Write(ca)
	f.Close()
	cfgPath := filepath.Join(a.dockerDC, "config.json")
	cfg := map[string]map[string]map[string]string{"auths": {}}
	if b, err := os.ReadFile(cfgPath); err == nil {
		if err := json.Unmarshal(b, &cfg); err != nil {
			a.t.Fatal(err)
		}
	}
	cfg["auths"][r.Host()] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(r.Username + ":" + r.Password))}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		a.t.Fatal(err)
	}
}

// run runs berth on the host side with every registry's CA and
// credentials.
func (a *airgap) run(args ...string) (string, string, int) {
	a.t.Helper()
	env := []string{"DOCKER_CONFIG=" + a.dockerDC, "COSIGN_PASSWORD=" + password}
	return testenv.Run(a.t, a.bin, env, append(args, "--ca-file", a.caFile)...)
}

func (a *airgap) must(args ...string) string {
	a.t.Helper()
	out, errOut, code := a.run(args...)
	if code != 0 {
		a.t.Fatalf("berth %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// cleanDevice removes the app and the images, as on a new device.
func (a *airgap) cleanDevice() {
	a.t.Helper()
	a.docker.RemoveProjectResources(a.t, "berth-line-3-")
	for _, id := range a.docker.ImagesLabelled(a.t, map[string]string{"dev.berth.test.version": "airgap"}) {
		a.docker.RemoveImage(a.t, id+"?force=1")
	}
}

// device runs `berth agent --once` inside the namespace with the given
// source and registries blocks, in a fresh state dir, and returns the
// result and the agent's stderr.
func (a *airgap) device(source, registries string) (result, string) {
	a.t.Helper()
	stateDir := filepath.Join(a.t.TempDir(), "state")
	cfg := fmt.Sprintf(`stateDir: %s
sources:
  - name: line-3
%s
    interval: 1m
    timeout: 60s
    verify: {keys: [%s]}
    credentials: {dockerConfig: %s}
    caFile: %s
%s
apply:
  compose: {waitTimeout: 30s, host: %s}
`, stateDir, indent(source, "    "), a.pub, filepath.Join(a.dockerDC, "config.json"), a.caFile, registries, a.docker.Host())
	cfgPath := filepath.Join(filepath.Dir(stateDir), "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		a.t.Fatal(err)
	}
	name, argv := a.ns.Wrap(a.bin, "agent", "--config", cfgPath, "--once", "--log-level", "info", "--output", "json")
	out, errOut, code := testenv.Run(a.t, name, nil, argv...)
	var res []result
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res) != 1 {
		a.t.Fatalf("agent --once in %s: exit %d, stdout %q, stderr %s\nconfig:\n%s", a.ns.Name, code, out, errOut, cfg)
	}
	if res[0].Outcome == "applied" && code != 0 {
		a.t.Fatalf("agent --once: applied but exit %d", code)
	}
	return res[0], errOut
}

func (a *airgap) expectServing(want string) {
	a.t.Helper()
	get := func() string {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", a.port))
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return strings.TrimSpace(string(b))
	}
	testenv.Eventually(a.t, 60*time.Second, func() bool { return get() == want }, "the app never served %q (serves %q)", want, get())
}

// upstreamRequests counts the requests upstream has logged so far.
func (a *airgap) upstreamRequests() int { return len(a.reg.Requests()) }

// mirrorSet is the device's registries: block: upstream is mirrored by
// plant, tags allowed there (the site registry is kept in sync by berth
// mirror and the anti-downgrade rule still applies), never the source.
func (a *airgap) mirrorSet(plant *testenv.Registry) string {
	return fmt.Sprintf("registries:\n  - source: %s\n    mirrors: [%s]\n    allowTags: true\n    sourceFallback: false\n", a.reg.Host(), plant.Host())
}

// TestAirgap runs the three ways a plant gets its state without the device
// ever reaching upstream: a site registry kept in sync by berth mirror, a
// bundle pushed into an empty site registry, and a bundle file.
func TestAirgap(t *testing.T) {
	a := newAirgap(t)
	source := fmt.Sprintf("url: oci://%s/fleet/line-3\nref: {tag: stable}", a.reg.Host())

	// The device really cannot reach upstream.
	if out, err := a.ns.Command("curl", "-sS", "--max-time", "3", "-k", a.reg.URL()+"/v2/").CombinedOutput(); err == nil {
		t.Fatalf("the device's namespace reaches upstream %s: %s", a.reg.Host(), out)
	}

	t.Run("berth mirror", func(t *testing.T) {
		plant := a.plant()
		cfg := filepath.Join(a.dir, "mirror.yaml")
		writeFile(t, cfg, fmt.Sprintf(`jobs:
  - name: site
    source: %s
    repositories: [fleet/line-3, acme/hello]
    targets: [%s]
    filter: {pattern: '.*'}
`, a.reg.Host(), plant.Host()))
		var sum json.RawMessage
		out := a.must("mirror", "--config", cfg, "--once", "--output", "json")
		if err := json.Unmarshal([]byte(out), &sum); err != nil {
			t.Fatalf("berth mirror --output json: %v\n%s", err, out)
		}
		a.cleanDevice()
		before := a.upstreamRequests()
		res, log := a.device(source, a.mirrorSet(plant))
		if res.Outcome != "applied" || res.Digest != a.digest {
			t.Fatalf("device via the synced plant registry = %+v, want applied %s\nagent log:\n%s", res, a.digest, log)
		}
		a.expectServing("from the plant")
		if n := a.upstreamRequests() - before; n != 0 {
			t.Fatalf("upstream logged %d requests while the device converged, want 0:\n%v", n, a.reg.Requests()[before:])
		}
		if !strings.Contains(log, plant.Host()) {
			t.Errorf("the agent's log never names the mirror %s that served it:\n%s", plant.Host(), log)
		}
	})

	bundle := filepath.Join(a.dir, "site.tar")
	a.must("bundle", "create", a.url("fleet/line-3:stable"), "-o", bundle, "--key", a.pub)
	a.must("bundle", "verify", bundle, "--key", a.pub)

	t.Run("bundle push", func(t *testing.T) {
		plant := a.plant() // empty
		a.must("bundle", "push", bundle, plant.Host())
		a.cleanDevice()
		before := a.upstreamRequests()
		res, log := a.device(source, a.mirrorSet(plant))
		if res.Outcome != "applied" || res.Digest != a.digest {
			t.Fatalf("device via the bundle-filled plant registry = %+v, want applied %s\nagent log:\n%s", res, a.digest, log)
		}
		a.expectServing("from the plant")
		if n := a.upstreamRequests() - before; n != 0 {
			t.Fatalf("upstream logged %d requests while the device converged, want 0", n)
		}
	})

	t.Run("bundle file", func(t *testing.T) {
		a.cleanDevice()
		a.reg.Stop() // no registry at all from here on
		res, log := a.device("url: file://"+bundle, "")
		if res.Outcome != "applied" || res.Digest != a.digest {
			t.Fatalf("device from file://%s = %+v, want applied %s\nagent log:\n%s", bundle, res, a.digest, log)
		}
		a.expectServing("from the plant")

		// One blob altered: refused by bundle verify and by the agent,
		// naming the blob, and the app keeps running.
		bad := filepath.Join(a.dir, "altered.tar")
		blob := alterLargestBlob(t, bundle, bad)
		_, errOut, code := a.run("bundle", "verify", bad, "--key", a.pub)
		if code == 0 || !strings.Contains(errOut, blob) {
			t.Fatalf("bundle verify of a bundle with blob %s altered: exit %d, stderr %s; want a failure naming the blob", blob, code, errOut)
		}
		// The device must need the altered layer: untag the app's image
		// (the running container keeps it), as on a device that has not
		// loaded it yet.
		var imgs []struct{ RepoTags []string }
		a.docker.Do(t, http.MethodGet, "/images/json?filters="+url.QueryEscape(`{"label":["dev.berth.test.version=airgap"]}`), nil, &imgs)
		for _, img := range imgs {
			for _, tag := range img.RepoTags {
				a.docker.RemoveImage(t, tag+"?force=1")
			}
		}
		res, log = a.device("url: file://"+bad, "")
		if res.Outcome == "applied" || !strings.Contains(res.Error+log, blob) {
			t.Fatalf("agent on an altered bundle = %+v, want refused naming blob %s\nlog:\n%s", res, blob, log)
		}
		a.expectServing("from the plant")
	})
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// alterLargestBlob copies the bundle tar src to dst with one byte of its
// largest blob flipped (an image layer), and returns that blob's digest.
func alterLargestBlob(t *testing.T, src, dst string) string {
	t.Helper()
	var largest string
	var size int64
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(h.Name, "blobs/sha256/") && h.Size > size {
			largest, size = h.Name, h.Size
		}
	}
	f.Close()
	if largest == "" {
		t.Fatalf("bundle %s has no blobs/sha256/ entries", src)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	tr, tw := tar.NewReader(in), tar.NewWriter(out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr) // the test's own bundle
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == largest {
			b[len(b)/2] ^= 0xff
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + strings.TrimPrefix(largest, "blobs/sha256/")
}
