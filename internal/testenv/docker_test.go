package testenv

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestNegotiateAPIVersion(t *testing.T) {
	for _, c := range []struct{ server, min, want string }{
		{"1.41", "1.12", "1.41"}, // Debian bookworm's docker.io
		{"1.47", "1.24", "1.47"},
		{"1.51", "1.24", dockerMaxAPIVersion},
		{"1.52", "1.50", "1.50"}, // an engine that dropped our version
		{"", "", dockerMaxAPIVersion},
	} {
		if got := negotiateAPIVersion(c.server, c.min); got != c.want {
			t.Errorf("negotiateAPIVersion(%q, %q) = %q, want %q", c.server, c.min, got, c.want)
		}
	}
	if !versionLess("1.9", "1.41") || versionLess("1.100", "1.41") || versionLess("1.41", "1.41") {
		t.Error("versionLess compares numerically")
	}
}

func TestSplitRef(t *testing.T) {
	for ref, want := range map[string][2]string{
		"127.0.0.1:5000/acme/hello@sha256:abc": {"127.0.0.1:5000/acme/hello", "sha256:abc"},
		"127.0.0.1:5000/acme/hello:v1":         {"127.0.0.1:5000/acme/hello", "v1"},
		"127.0.0.1:5000/acme/hello":            {"127.0.0.1:5000/acme/hello", ""},
		"hello":                                {"hello", ""},
	} {
		if repo, tag := splitRef(ref); repo != want[0] || tag != want[1] {
			t.Errorf("splitRef(%q) = %q, %q", ref, repo, tag)
		}
	}
}

func TestDemuxLogs(t *testing.T) {
	frames := append([]byte{1, 0, 0, 0, 0, 0, 0, 4}, "out\n"...)
	frames = append(frames, append([]byte{2, 0, 0, 0, 0, 0, 0, 4}, "err\n"...)...)
	if got := demuxLogs(frames); got != "out\nerr\n" {
		t.Errorf("demuxLogs = %q", got)
	}
	if got := demuxLogs([]byte("tty text\n")); got != "tty text\n" {
		t.Errorf("demuxLogs(tty) = %q", got)
	}
}

func TestDockerMissing(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "none.sock"))
	ft := &fatalRecorder{TB: t}
	runInGoroutine(func() { Docker(ft) })
	if !strings.HasPrefix(ft.msg, NoDockerMessage) || !strings.Contains(ft.msg, "none.sock") {
		t.Errorf("fatal message = %q", ft.msg)
	}
	t.Setenv("DOCKER_HOST", "ssh://somewhere")
	runInGoroutine(func() { Docker(ft) })
	if !strings.Contains(ft.msg, "only unix:// and tcp://") {
		t.Errorf("fatal message = %q", ft.msg)
	}
}

func TestScratchImage(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "app")
	if err := os.WriteFile(bin, []byte("#!/not/really\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	opts := ImageOptions{Env: []string{"A=1"}, Labels: map[string]string{"v": "1"}, Cmd: []string{"serve"}}
	a, err := ScratchImage(bin, "", opts)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ScratchImage(bin, "", opts)
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Errorf("same inputs, digests %s and %s", da, db)
	}
	cfg, _ := a.ConfigFile()
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH || cfg.Config.Entrypoint[0] != "/app" ||
		cfg.Config.Cmd[0] != "serve" || cfg.Config.Env[0] != "A=1" || cfg.Config.Labels["v"] != "1" {
		t.Errorf("config = %+v", cfg)
	}
	if _, ok := cfg.Config.ExposedPorts[HelloPort]; !ok {
		t.Errorf("ports = %v", cfg.Config.ExposedPorts)
	}
	layers, _ := a.Layers()
	if len(layers) != 1 {
		t.Errorf("%d layers", len(layers))
	}
	c, _ := ScratchImage(bin, "", ImageOptions{Labels: map[string]string{"v": "2"}})
	if dc, _ := c.Digest(); dc == da {
		t.Error("another label, same digest")
	}
}

// TestDockerHello is the whole path e2e tests take: build hello, push it
// FROM scratch to a TLS registry with a password, make the engine trust the
// registry, pull by digest through the Engine API, run it with a port on
// 127.0.0.1, GET /, and clean up by Compose project label.
func TestDockerHello(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Docker Engine and docker-registry")
	}
	d := Docker(t)
	t.Logf("Docker Engine at %s, API %s", d.Host(), d.APIVersion())
	reg := StartRegistry(t, RegistryOptions{})
	hello := BuildHello(t)
	if again := BuildHello(t); again != hello {
		t.Errorf("BuildHello built twice: %s, %s", hello, again)
	}

	digest := PushImage(t, reg, "acme/hello:v1", hello, ImageOptions{})
	v2 := PushImage(t, reg, reg.Ref("acme/hello:v2"), hello, ImageOptions{Labels: map[string]string{"berth.test/version": "2"}})
	if !strings.HasPrefix(digest, "sha256:") || v2 == digest {
		t.Fatalf("digests %s, %s", digest, v2)
	}
	ref := reg.Ref("acme/hello@" + digest)

	// Credentials are needed, and X-Registry-Auth carries them.
	if err := d.pull(nil, ref); err == nil || !strings.Contains(err.Error(), "no basic auth credentials") {
		t.Errorf("pull without credentials: err = %v", err)
	}
	d.TrustRegistry(t, reg)
	caFile := filepath.Join("/etc/docker/certs.d", reg.Host(), "ca.crt")
	if got, want := readFile(t, caFile), readFile(t, reg.CAFile); got != want {
		t.Fatalf("%s holds %q", caFile, got)
	}
	t.Cleanup(func() { d.RemoveImage(t, ref) })
	d.PullImage(t, reg, ref)
	if !d.ImagePresent(t, ref) {
		t.Fatalf("%s not present after the pull", ref)
	}
	if d.ImagePresent(t, reg.Ref("acme/hello@sha256:"+strings.Repeat("0", 64))) {
		t.Error("a never-pulled digest is present")
	}

	project := "berthtestenv-" + randomHex(4)
	d.RemoveProjectResources(t, project) // nothing there: fine
	t.Cleanup(func() { d.RemoveProjectResources(t, project) })
	labels := map[string]string{ComposeProjectLabel: project, "berth.test/app": "hello"}
	d.Do(t, http.MethodPost, "/volumes/create", map[string]any{"Name": project + "_data", "Labels": labels}, nil)
	d.Do(t, http.MethodPost, "/networks/create", map[string]any{"Name": project + "_default", "Labels": labels}, nil)
	var created struct{ ID string }
	d.Do(t, http.MethodPost, "/containers/create?name="+project+"-web-1", map[string]any{
		"Image":        ref,
		"Labels":       labels,
		"Env":          []string{"MESSAGE=" + HelloMessage + " " + project},
		"ExposedPorts": map[string]any{HelloPort: map[string]any{}},
		"HostConfig": map[string]any{
			"PortBindings": map[string]any{HelloPort: []map[string]string{{"HostIp": "127.0.0.1", "HostPort": ""}}},
			"Binds":        []string{project + "_data:/data"},
			"NetworkMode":  project + "_default",
		},
	}, &created)
	d.Do(t, http.MethodPost, "/containers/"+created.ID+"/start", nil, nil)

	cs := d.Containers(t, map[string]string{ComposeProjectLabel: project})
	if len(cs) != 1 {
		t.Fatalf("containers of %s: %+v", project, cs)
	}
	c := cs[0]
	if c.ID != created.ID || c.Name != project+"-web-1" || c.Image != ref || c.State != "running" || c.Health != "" || c.Labels["berth.test/app"] != "hello" {
		t.Errorf("container = %+v", c)
	}
	addr := c.Ports[HelloPort]
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("port %s bound to %q", HelloPort, addr)
	}
	var body string
	Eventually(t, 30*time.Second, func() bool {
		body = httpGetBody("http://" + addr + "/")
		return body != ""
	}, "GET http://%s/ answered nothing; logs:\n%s", addr, d.Logs(t, c.ID, 20))
	if body != HelloMessage+" "+project+"\n" {
		t.Errorf("GET / = %q", body)
	}
	// The log line reaches the engine's log driver on its own time: the
	// server may answer before it is readable (seen under load).
	Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(d.Logs(t, c.ID, 0), "hello listening on :8080")
	}, "the container's log never had \"hello listening on :8080\"")
	if n := len(d.Containers(t, map[string]string{ComposeProjectLabel: project, "berth.test/app": "other"})); n != 0 {
		t.Errorf("label value filter: %d containers", n)
	}
	if n := len(d.Containers(t, map[string]string{"berth.test/app": ""})); n < 1 {
		t.Errorf("label key filter: %d containers", n)
	}
	if vs := d.Volumes(t, map[string]string{ComposeProjectLabel: project}); len(vs) != 1 || vs[0].Name != project+"_data" {
		t.Errorf("volumes = %+v", vs)
	}
	if ns := d.Networks(t, map[string]string{ComposeProjectLabel: project}); len(ns) != 1 || ns[0].Name != project+"_default" {
		t.Errorf("networks = %+v", ns)
	}

	d.StopContainer(t, c.ID)
	if c, ok := d.Inspect(t, c.ID); !ok || c.State != "exited" {
		t.Errorf("after stop: %+v, %v", c, ok)
	}
	d.StopContainer(t, c.ID) // stopped already: fine

	// A prefix that matches another project's name does not touch ours.
	d.RemoveProjectResources(t, project+"-other")
	if n := len(d.Containers(t, map[string]string{ComposeProjectLabel: project})); n != 1 {
		t.Errorf("another prefix removed our container (%d left)", n)
	}
	d.RemoveProjectResources(t, project[:len(project)-2])
	if n := len(d.Containers(t, map[string]string{ComposeProjectLabel: project})); n != 0 {
		t.Errorf("%d containers left", n)
	}
	if n := len(d.Volumes(t, map[string]string{ComposeProjectLabel: project})); n != 0 {
		t.Errorf("%d volumes left", n)
	}
	if n := len(d.Networks(t, map[string]string{ComposeProjectLabel: project})); n != 0 {
		t.Errorf("%d networks left", n)
	}
	d.RemoveContainer(t, c.ID) // gone already: fine
	if _, ok := d.Inspect(t, c.ID); ok {
		t.Error("container still there")
	}
	ft := &fatalRecorder{TB: t}
	runInGoroutine(func() { d.RemoveProjectResources(ft, "") })
	if !strings.Contains(ft.msg, "needs a project prefix") {
		t.Errorf("empty prefix: %q", ft.msg)
	}

	// TrustRegistry's file goes when the test that wrote it ends.
	reg2 := StartRegistry(t, RegistryOptions{})
	t.Run("trust", func(t *testing.T) { d.TrustRegistry(t, reg2) })
	if _, err := os.Stat(filepath.Join("/etc/docker/certs.d", reg2.Host())); !os.IsNotExist(err) {
		t.Errorf("certs.d/%s after the subtest: %v", reg2.Host(), err)
	}
}

// TestDockerMultiPlatform pushes an index for two platforms and has the
// engine pull it by the index's digest: it takes its own platform.
func TestDockerMultiPlatform(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Docker Engine and docker-registry")
	}
	other := "linux/arm64"
	if runtime.GOARCH == "arm64" {
		other = "linux/amd64"
	}
	d := Docker(t)
	reg := StartRegistry(t, RegistryOptions{})
	d.TrustRegistry(t, reg)
	hello := BuildHello(t)
	digest := PushImage(t, reg, "acme/multi:v1", hello, ImageOptions{
		Platforms:        []string{hostPlatform(), other},
		PlatformBinaries: map[string]string{other: BuildHelloFor(t, other)},
	})
	r, err := name.ParseReference(reg.Ref("acme/multi@" + digest))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(r, remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}), remote.WithTransport(reg.HTTPClient().Transport))
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var platforms []string
	for _, desc := range m.Manifests {
		platforms = append(platforms, desc.Platform.String())
	}
	if len(platforms) != 2 || platforms[0] != hostPlatform() || platforms[1] != other {
		t.Errorf("index platforms = %v", platforms)
	}
	var hostConfig v1.Hash
	for _, desc := range m.Manifests {
		if desc.Platform.String() == hostPlatform() {
			img, err := idx.Image(desc.Digest)
			if err != nil {
				t.Fatal(err)
			}
			if hostConfig, err = img.ConfigName(); err != nil {
				t.Fatal(err)
			}
		}
	}

	ref := r.String()
	t.Cleanup(func() { d.RemoveImage(t, ref) })
	d.PullImage(t, reg, ref)
	var img struct {
		ID           string `json:"Id"`
		Architecture string
	}
	d.Do(t, http.MethodGet, "/images/"+ref+"/json", nil, &img)
	// The image ID is the config digest of the host platform's image.
	if img.Architecture != runtime.GOARCH || img.ID != hostConfig.String() {
		t.Errorf("pulled %s %s, want %s %s", img.Architecture, img.ID, runtime.GOARCH, hostConfig)
	}
}

func httpGetBody(url string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return string(b)
}
