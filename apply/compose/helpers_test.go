package compose

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/compose/v5/pkg/api"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/moby/moby/client"

	"github.com/berth-dev/berth/state"
)

// Test images, loaded into the engine without a registry.
const (
	imageV1 = "berth-ctest/hello:v1"
	imageV2 = "berth-ctest/hello:v2"
)

// runID makes the sources, hence the projects, of this test run unique, so
// that runs sharing an engine do not meet, and cleanup finds them by
// prefix.
var runID = func() string {
	b := make([]byte, 3)
	rand.Read(b)
	return "ct" + hex.EncodeToString(b)
}()

func dockerHost() string {
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		return h
	}
	return DefaultHost
}

var (
	helloOnce sync.Once
	helloBin  []byte
	helloErr  error
	loadOnce  sync.Once
	loadErr   error
)

// engine returns a client of the test engine, failing the test clearly
// when none answers.
func engine(t *testing.T) *client.Client {
	t.Helper()
	dc, err := client.New(client.WithHost(dockerHost()))
	if err != nil {
		t.Fatalf("docker client for %s: %v", dockerHost(), err)
	}
	t.Cleanup(func() { dc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := dc.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		t.Fatalf("no Docker Engine answers at DOCKER_HOST=%s: %v\nthese tests need one: run `test/scripts/dockerd.sh start` (as root) and export DOCKER_HOST", dockerHost(), err)
	}
	return dc
}

// helloBinary builds test/images/hello statically.
func helloBinary(t *testing.T) []byte {
	t.Helper()
	helloOnce.Do(func() {
		dir, err := os.MkdirTemp("", "berth-hello-")
		if err != nil {
			helloErr = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "hello")
		cmd := exec.Command("go", "build", "-trimpath", "-o", out, "github.com/berth-dev/berth/test/images/hello")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			helloErr = fmt.Errorf("build test/images/hello: %v\n%s", err, b)
			return
		}
		helloBin, helloErr = os.ReadFile(out)
	})
	if helloErr != nil {
		t.Fatal(helloErr)
	}
	return helloBin
}

// helloImage is an image FROM scratch holding /hello, answering msg.
func helloImage(t *testing.T, msg string) v1.Image {
	t.Helper()
	data := helloBinary(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "hello", Mode: 0o755, Size: int64(len(data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(data)
	tw.Close()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Config.Entrypoint = []string{"/hello"}
	cfg.Config.Env = []string{"MESSAGE=" + msg}
	cfg.Config.ExposedPorts = map[string]struct{}{"8080/tcp": {}}
	cfg.Config.Labels = map[string]string{"dev.berth.test.image": msg}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// loadImages loads imageV1 and imageV2 into the engine, once.
func loadImages(t *testing.T, dc *client.Client) {
	t.Helper()
	loadOnce.Do(func() {
		for _, x := range []struct{ ref, msg string }{{imageV1, "v1"}, {imageV2, "v2"}} {
			if loadErr = loadImage(t, dc, x.ref, helloImage(t, x.msg)); loadErr != nil {
				return
			}
		}
	})
	if loadErr != nil {
		t.Fatal(loadErr)
	}
}

// loadImage loads img into the engine as ref, like `docker load`.
func loadImage(t *testing.T, dc *client.Client, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarball.Write(tag, img, pw)) }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := dc.ImageLoad(ctx, pr, client.ImageLoadWithQuiet(true))
	if err != nil {
		return fmt.Errorf("load %s: %w", ref, err)
	}
	defer res.Close()
	b, _ := io.ReadAll(res)
	if bytes.Contains(b, []byte(`"error"`)) {
		return fmt.Errorf("load %s: %s", ref, b)
	}
	return nil
}

// fixture is an Applier on the test engine with its own env folder.
type fixture struct {
	t  *testing.T
	a  *Applier
	dc *client.Client
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dc := engine(t)
	loadImages(t, dc)
	a, err := New(context.Background(), Options{
		Host:         dockerHost(),
		WaitTimeout:  30 * time.Second,
		EnvDir:       t.TempDir(),
		DockerConfig: filepath.Join(t.TempDir(), "config.json"),
		Log:          slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		t.Fatal(err)
	}
	a.pollInterval = 200 * time.Millisecond
	t.Cleanup(func() { a.Close() })
	t.Cleanup(func() { cleanup(t, dc) })
	return &fixture{t: t, a: a, dc: dc}
}

// testWriter sends logs to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// source names a source unique to this run.
func source(n string) string { return runID + "-" + n }

// cleanup removes every container, network and volume of this run's
// projects.
func cleanup(t *testing.T, dc *client.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	prefix := "berth-" + runID
	f := make(client.Filters).Add("label", api.ProjectLabel)
	cs, err := dc.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	for _, c := range cs.Items {
		if strings.HasPrefix(c.Labels[api.ProjectLabel], prefix) {
			dc.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		}
	}
	ns, _ := dc.NetworkList(ctx, client.NetworkListOptions{Filters: f})
	for _, n := range ns.Items {
		if strings.HasPrefix(n.Labels[api.ProjectLabel], prefix) {
			dc.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{})
		}
	}
	vs, _ := dc.VolumeList(ctx, client.VolumeListOptions{Filters: make(client.Filters).Add("label", api.ProjectLabel)})
	for _, v := range vs.Items {
		if strings.HasPrefix(v.Labels[api.ProjectLabel], prefix) {
			dc.VolumeRemove(ctx, v.Name, client.VolumeRemoveOptions{Force: true})
		}
	}
}

// revision writes an extracted revision: berth.yaml and the given files.
func revision(t *testing.T, src, seed, berthYAML string, files map[string]string, extensions ...string) state.Revision {
	t.Helper()
	dir := t.TempDir()
	files[state.FileName] = berthYAML
	for p, content := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st, err := state.Load(os.DirFS(dir))
	if err != nil {
		t.Fatalf("berth.yaml: %v", err)
	}
	sum := sha256.Sum256([]byte(src + "/" + seed))
	return state.Revision{Source: src, Digest: "sha256:" + hex.EncodeToString(sum[:]), Dir: dir, State: st, Extensions: extensions}
}

// stateYAML is a berth.yaml deploying the Compose apps named, each from
// apps/<name>.
func stateYAML(apps ...string) string {
	var b strings.Builder
	b.WriteString("apiVersion: berth.dev/v1\nkind: DeviceState\napps:")
	if len(apps) == 0 {
		b.WriteString(" []")
	}
	b.WriteString("\n")
	for _, a := range apps {
		fmt.Fprintf(&b, "  - name: %s\n    compose: {path: apps/%s}\n", a, a)
	}
	return b.String()
}

// webCompose is a compose file with one service "web" running image,
// published on 127.0.0.1:port (a literal, or ${VAR} to interpolate), with a
// named volume and a healthcheck.
func webCompose(image, port string, env ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `services:
  web:
    image: %s
    ports: ["127.0.0.1:%s:8080"]
    volumes: ["data:/data"]
    stop_grace_period: 2s
    healthcheck:
      test: ["CMD", "/hello", "healthcheck"]
      interval: 1s
      timeout: 2s
      retries: 2
`, image, port)
	if len(env) > 0 {
		b.WriteString("    environment:\n")
		for _, e := range env {
			fmt.Fprintf(&b, "      - %s\n", e)
		}
	}
	b.WriteString("volumes:\n  data: {}\n")
	return b.String()
}

// freePort returns a TCP port free on 127.0.0.1.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// get returns the body of GET http://127.0.0.1:port/, retried briefly.
func get(t *testing.T, port string) string {
	t.Helper()
	var last error
	for range 20 {
		resp, err := http.Get("http://127.0.0.1:" + port + "/")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return strings.TrimSpace(string(b))
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("GET 127.0.0.1:%s: %v", port, last)
	return ""
}

// projectContainers returns the containers of a project.
func (f *fixture) projectContainers(project string) []ctr {
	f.t.Helper()
	cs, err := f.a.containers(context.Background(), project)
	if err != nil {
		f.t.Fatal(err)
	}
	return cs
}

// serviceContainer returns the one container of a service, failing when
// there is not exactly one.
func (f *fixture) serviceContainer(project, service string) ctr {
	f.t.Helper()
	var out []ctr
	for _, c := range f.projectContainers(project) {
		if c.service == service {
			out = append(out, c)
		}
	}
	if len(out) != 1 {
		f.t.Fatalf("project %s service %s: %d containers, want 1: %+v", project, service, len(out), out)
	}
	return out[0]
}

// volumeExists reports whether the named volume exists.
func (f *fixture) volumeExists(name string) bool {
	f.t.Helper()
	_, err := f.dc.VolumeInspect(context.Background(), name, client.VolumeInspectOptions{})
	if err != nil && !isNotFound(err) {
		f.t.Fatal(err)
	}
	return err == nil
}

// networks returns the networks of a project.
func (f *fixture) networks(project string) []string {
	f.t.Helper()
	ns, err := f.dc.NetworkList(context.Background(), client.NetworkListOptions{Filters: make(client.Filters).Add("label", api.ProjectLabel+"="+project)})
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, n := range ns.Items {
		if n.Labels[LabelSource] == "" || n.Labels[LabelApp] == "" {
			f.t.Errorf("network %s lacks berth's labels: %v", n.Name, n.Labels)
		}
		out = append(out, n.Name)
	}
	return out
}

func detailOf(t *testing.T, raw json.RawMessage) Detail {
	t.Helper()
	var d Detail
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("detail %s: %v", raw, err)
	}
	return d
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
