package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

// composeEnv is a registry, a Docker Engine, FROM-scratch images in the
// registry and a device agent applying Compose apps.
type composeEnv struct {
	*agentEnv
	docker *testenv.DockerEngine
	port   int
	images map[string]string // version -> image reference (tag)
}

func newComposeEnv(t *testing.T) *composeEnv {
	t.Helper()
	a := newAgentEnv(t)
	c := &composeEnv{agentEnv: a, docker: testenv.Docker(t), port: freePort(t), images: map[string]string{}}
	c.docker.TrustRegistry(t, a.reg)
	hello := testenv.BuildHello(t)
	for _, v := range []string{"v1", "v2"} {
		ref := a.reg.Host() + "/acme/hello:" + v
		testenv.PushImage(t, a.reg, ref, hello, testenv.ImageOptions{Labels: map[string]string{"dev.berth.test.version": v}})
		c.images[v] = ref
	}
	t.Cleanup(func() { c.docker.RemoveProjectResources(t, "berth-line-3-") })
	c.docker.RemoveProjectResources(t, "berth-line-3-") // leftovers of an interrupted run
	return c
}

// state writes berth.yaml and the web app's compose file into the
// publisher's repository. env adds environment lines to the service.
func (c *composeEnv) state(apps string, files map[string]string) {
	c.t.Helper()
	for _, dir := range []string{"apps", "extensions"} {
		os.RemoveAll(filepath.Join(c.repo, dir))
	}
	files["berth.yaml"] = "apiVersion: berth.dev/v1\nkind: DeviceState\n" + apps
	for p, content := range files {
		full := filepath.Join(c.repo, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			c.t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			c.t.Fatal(err)
		}
	}
}

func (c *composeEnv) webCompose(image, message string, unhealthy bool) string {
	env := fmt.Sprintf("      MESSAGE: %q\n", message)
	if unhealthy {
		env += "      UNHEALTHY: \"1\"\n"
	}
	return fmt.Sprintf(`services:
  hello:
    image: %s
    environment:
%s    ports: ["127.0.0.1:%d:8080"]
    volumes: ["data:/data"]
    healthcheck:
      test: ["CMD", "/hello", "healthcheck"]
      interval: 1s
      timeout: 2s
      retries: 3
volumes:
  data: {}
`, image, env, c.port)
}

const webApp = "apps:\n  - name: web\n    compose: {path: apps/web}\n"

func (c *composeEnv) serving() string {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", c.port))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

func (c *composeEnv) waitServing(msg string) {
	c.t.Helper()
	testenv.Eventually(c.t, 60*time.Second, func() bool { return c.serving() == msg }, "the app never served %q (serves %q)", msg, c.serving())
}

func (c *composeEnv) containers() []testenv.Container {
	return c.docker.Containers(c.t, map[string]string{"dev.berth.source": "line-3"})
}

func (c *composeEnv) volumes() []testenv.Volume {
	return c.docker.Volumes(c.t, map[string]string{"com.docker.compose.project": "berth-line-3-web"})
}

// TestComposeLifecycle: apply, upgrade, failed health check rolled back,
// prune keeping volumes, prune removing them.
func TestComposeLifecycle(t *testing.T) {
	c := newComposeEnv(t)
	c.writeConfig("ref: {tag: stable}", "apply:\n  compose: {waitTimeout: 20s}")

	// v1 applied and serving.
	c.state(webApp, map[string]string{"apps/web/compose.yaml": c.webCompose(c.images["v1"], "v1", false)})
	v1 := c.publish("stable", c.key, 1)
	c.expectApplied(v1)
	c.waitServing("v1")

	// v2: a new image upgrades in place.
	c.state(webApp, map[string]string{"apps/web/compose.yaml": c.webCompose(c.images["v2"], "v2", false)})
	v2 := c.publish("stable", c.key, 2)
	c.expectApplied(v2)
	c.waitServing("v2")
	if cs := c.containers(); len(cs) != 1 || !strings.Contains(cs[0].Labels["dev.berth.revision"], strings.TrimPrefix(v2, "sha256:")) {
		t.Fatalf("containers after v2 = %+v", cs)
	}

	// v3: the health check fails, so the app goes back to v2, which keeps
	// serving, and the failure says why.
	c.state(webApp, map[string]string{"apps/web/compose.yaml": c.webCompose(c.images["v2"], "v3", true)})
	v3 := c.publish("stable", c.key, 3)
	res, code := c.once()
	if code == 0 || res.Outcome != "failed" || res.Digest != v3 || !strings.Contains(res.Error, "hello") {
		t.Fatalf("v3 = %+v (exit %d), want failed naming the service", res, code)
	}
	if c.current() != v2 {
		t.Fatalf("current = %s after a failed apply, want v2 %s", c.current(), v2)
	}
	c.waitServing("v2")

	// v4 without the app: pruned, its named volume kept.
	c.state("apps: []\n", map[string]string{})
	v4 := c.publish("stable", c.key, 4)
	c.expectApplied(v4)
	if cs := c.containers(); len(cs) != 0 {
		t.Fatalf("containers after prune = %+v", cs)
	}
	if vs := c.volumes(); len(vs) != 1 {
		t.Fatalf("volumes after prune = %+v, want the data volume kept", vs)
	}

	// v5 brings it back with prune: {volumes: true}; v6 drops it again and
	// this time the volume goes too.
	c.state("apps:\n  - name: web\n    compose: {path: apps/web}\n    prune: {volumes: true}\n", map[string]string{"apps/web/compose.yaml": c.webCompose(c.images["v2"], "v5", false)})
	v5 := c.publish("stable", c.key, 5)
	c.expectApplied(v5)
	c.waitServing("v5")
	c.state("apps: []\n", map[string]string{})
	v6 := c.publish("stable", c.key, 6)
	c.expectApplied(v6)
	if vs := c.volumes(); len(vs) != 0 {
		t.Fatalf("volumes after prune with volumes: true = %+v", vs)
	}
}

// TestComposeDriftOutageExtensions runs the agent as a daemon: containers
// removed or changed by hand come back, a registry outage leaves the app
// running, and an extension follows the device's configuration.
func TestComposeDriftOutageExtensions(t *testing.T) {
	c := newComposeEnv(t)
	ext := "extensions:\n  tools: {compose: {path: extensions/tools}}\n"
	toolsCompose := fmt.Sprintf("services:\n  tools:\n    image: %s\n    environment: {PORT: \"9090\"}\n", c.images["v1"])
	c.state(webApp+ext, map[string]string{
		"apps/web/compose.yaml":         c.webCompose(c.images["v1"], "v1", false),
		"extensions/tools/compose.yaml": toolsCompose,
	})
	v1 := c.publish("stable", c.key, 1)
	c.writeConfig("ref: {tag: stable}", "apply:\n  compose: {waitTimeout: 20s}", "extensions: [tools]")
	p := c.startAgent()
	c.waitApplied(v1)
	c.waitServing("v1")
	project := func(name string) []testenv.Container {
		return c.docker.Containers(t, map[string]string{"com.docker.compose.project": name})
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return len(project("berth-line-3-tools")) == 1 }, "the enabled extension never ran")

	// docker rm -f: restored within one interval.
	web := project("berth-line-3-web")
	if len(web) != 1 {
		t.Fatalf("web containers = %+v", web)
	}
	c.docker.RemoveContainer(t, web[0].ID)
	testenv.Eventually(t, 30*time.Second, func() bool {
		cs := project("berth-line-3-web")
		return len(cs) == 1 && cs[0].ID != web[0].ID && cs[0].State == "running"
	}, "a removed container was not restored")
	c.waitServing("v1")

	// Stopped by hand: started again.
	web = project("berth-line-3-web")
	c.docker.StopContainer(t, web[0].ID)
	testenv.Eventually(t, 30*time.Second, func() bool {
		cs := project("berth-line-3-web")
		return len(cs) == 1 && cs[0].State == "running"
	}, "a stopped container was not restarted")

	// Registry down: the app keeps running, the agent reports the error.
	c.reg.Stop()
	out, _, _ := testenv.Run(t, c.bin, nil, "reconcile", "--now", "--config", c.cfgPath, "--output", "json")
	if !strings.Contains(out, `"error"`) {
		t.Errorf("reconcile with the registry down = %s", out)
	}
	time.Sleep(3 * time.Second)
	if c.serving() != "v1" {
		t.Fatalf("the app stopped serving during a registry outage")
	}
	c.reg.Start()

	// The extension disabled on the device: removed.
	p.Stop()
	c.writeConfig("ref: {tag: stable}", "apply:\n  compose: {waitTimeout: 20s}")
	c.startAgent()
	testenv.Eventually(t, 30*time.Second, func() bool { return len(project("berth-line-3-tools")) == 0 }, "the disabled extension was not removed")
	c.waitServing("v1")
}
