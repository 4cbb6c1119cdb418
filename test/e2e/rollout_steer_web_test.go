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

// steerWebProject is the Compose project of the fleet's web app (source
// line-3, app web) on the one agent of TestRolloutSteer that runs Compose.
const steerWebProject = "berth-line-3-web"

// steerWeb is the fleet's Compose app web, as c02 runs it on the test's
// Docker Engine: the hello image (FROM scratch) on a port of its own, with
// a device-local env file that sets UNHEALTHY=1. The releases that read
// that variable in their compose file fail the health check there.
type steerWeb struct {
	t      *testing.T
	docker *testenv.DockerEngine
	repo   string // the fleet's Git repository
	port   int
	envDir string // c02's apply.compose.envDir
}

// startSteerWeb replaces the fleet's acme/hello:1.0.0 (random bytes) with
// the hello image, so that the example's web app runs, and writes the
// device-local env file of c02.
func startSteerWeb(t *testing.T, f *testenv.Fleet) *steerWeb {
	t.Helper()
	w := &steerWeb{t: t, docker: testenv.Docker(t), repo: f.Repo, port: freePort(t), envDir: filepath.Join(f.Dir, "c02-env")}
	w.docker.TrustRegistry(t, f.Registry)
	testenv.PushImage(t, f.Registry, f.Registry.Host()+"/acme/hello:1.0.0", testenv.BuildHello(t), testenv.ImageOptions{})
	w.docker.RemoveProjectResources(t, steerWebProject) // leftovers of an interrupted run
	t.Cleanup(func() { w.docker.RemoveProjectResources(t, steerWebProject) })
	if err := os.MkdirAll(w.envDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// Device-local, never in the artifact: this device's web is told to
	// fail its health check, wherever a release passes the value on.
	if err := os.WriteFile(filepath.Join(w.envDir, "web.env"), []byte("UNHEALTHY=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

// applyBlock is the apply: block of the agent that runs the web app.
func (w *steerWeb) applyBlock() string {
	return fmt.Sprintf("apply:\n  compose: {host: %s, envDir: %s, waitTimeout: 30s}\n", w.docker.Host(), w.envDir)
}

// write writes the web app's compose file into the fleet's repository
// for the next push: it serves message, and with fromEnv its UNHEALTHY
// comes from the device's env file.
func (w *steerWeb) write(message string, fromEnv bool) {
	w.t.Helper()
	env := fmt.Sprintf("      MESSAGE: %q\n", message)
	if fromEnv {
		env += "      UNHEALTHY: \"${UNHEALTHY:-}\"\n"
	}
	compose := fmt.Sprintf(`services:
  hello:
    image: %s
    environment:
%s    ports: ["127.0.0.1:%d:8080"]
    healthcheck:
      test: ["CMD", "/hello", "healthcheck"]
      interval: 1s
      timeout: 2s
      retries: 2
`, w.image(), env, w.port)
	if err := os.WriteFile(filepath.Join(w.repo, "apps", "web", "compose.yaml"), []byte(compose), 0o644); err != nil {
		w.t.Fatal(err)
	}
}

// image is the image the example's compose file names.
func (w *steerWeb) image() string {
	b, err := os.ReadFile(filepath.Join(w.repo, "apps", "web", "compose.yaml"))
	if err != nil {
		w.t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if img, ok := strings.CutPrefix(strings.TrimSpace(line), "image: "); ok {
			return img
		}
	}
	w.t.Fatalf("no image in the web app's compose file:\n%s", b)
	return ""
}

// serving is what the web app answers on /, "" when nothing answers.
func (w *steerWeb) serving() string {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", w.port))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	return strings.TrimSpace(string(b))
}

// on reports, "" when it holds, how the web app differs from: one
// container, created for the release digest, running, healthy and
// serving message.
func (w *steerWeb) on(digest, message string) string {
	cs := w.docker.Containers(w.t, map[string]string{testenv.ComposeProjectLabel: steerWebProject})
	if len(cs) != 1 {
		return fmt.Sprintf("%d containers of project %s: %+v", len(cs), steerWebProject, cs)
	}
	c := cs[0]
	if rev := c.Labels["dev.berth.revision"]; !strings.Contains(rev, strings.TrimPrefix(digest, "sha256:")) {
		return fmt.Sprintf("container %s was created for revision %s, want %s", c.Name, rev, digest)
	}
	if c.State != "running" || c.Health != "healthy" {
		return fmt.Sprintf("container %s is %s, health %q", c.Name, c.State, c.Health)
	}
	if got := w.serving(); got != message {
		return fmt.Sprintf("the app serves %q, want %q", got, message)
	}
	return ""
}
