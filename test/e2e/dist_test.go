package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/cli"
	"github.com/berth-dev/berth/internal/dist"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/reconcile/config"
)

// DistDirEnv names make dist's output folder; `make test` sets it after
// building the release. Without it the tests build what they need.
const distDirEnv = "BERTH_DIST_DIR"

var distBuilds sync.Map // platform string → dist.Binaries

// distBinaries returns berth and berth-agent for p: make dist's when
// BERTH_DIST_DIR is set, else built now (agent only when withAgent).
func distBinaries(t *testing.T, p dist.Platform, withAgent bool) dist.Binaries {
	t.Helper()
	if d := os.Getenv(distDirEnv); d != "" {
		dir := filepath.Join(d, "build", p.Slug())
		b := dist.Binaries{Platform: p, Berth: filepath.Join(dir, "berth"), Agent: filepath.Join(dir, "berth-agent")}
		for _, f := range []string{b.Berth, b.Agent} {
			if _, err := os.Stat(f); err != nil {
				t.Fatalf("%s=%s has no %s: run make dist (PLATFORMS must include %s)", distDirEnv, d, f, p)
			}
		}
		return b
	}
	key := fmt.Sprint(p, withAgent)
	if b, ok := distBuilds.Load(key); ok {
		return b.(dist.Binaries)
	}
	dir := t.TempDir()
	bld := dist.Build{Root: testenv.ModuleRoot(t), Version: "test"}
	b := dist.Binaries{Platform: p, Berth: filepath.Join(dir, "berth"), Agent: filepath.Join(dir, "berth-agent")}
	var err error
	if withAgent {
		b, err = bld.Binaries(context.Background(), p, dir, "")
	} else {
		err = bld.BuildOne(context.Background(), p, "./cmd/berth", b.Berth, "")
	}
	if err != nil {
		t.Fatal(err)
	}
	distBuilds.Store(key, b)
	return b
}

// TestDistQemu runs the arm64 and armv7 builds of berth under
// qemu-user-static: version, then a verified pull from a loopback
// registry.
func TestDistQemu(t *testing.T) {
	host := testenv.BuildBerth(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{Plain: true, NoAuth: true})
	work := t.TempDir()
	env := []string{"COSIGN_PASSWORD=" + password, "DOCKER_CONFIG=" + filepath.Join(work, "docker")}
	mustRun := func(bin string, args ...string) string {
		t.Helper()
		out, errOut, code := testenv.Run(t, bin, env, args...)
		if code != 0 {
			t.Fatalf("%s %s: exit %d\n%s%s", bin, strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	mustRun(host, "generate-key", "--prefix", filepath.Join(work, "cosign"))
	src := filepath.Join(work, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "berth.yaml"), []byte("apiVersion: berth.dev/v1\nkind: DeviceState\napps: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "hello.txt"), []byte("hello, arm\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	url := "oci://" + reg.Host() + "/fleet/qemu:1.0.0"
	mustRun(host, "push", testenv.GitRepo(t, src), url, "--sign-key", filepath.Join(work, "cosign.key"), "--insecure")

	for _, tc := range []struct{ platform, qemu string }{{"linux/arm64", "qemu-aarch64-static"}, {"linux/arm/v7", "qemu-arm-static"}} {
		t.Run(tc.platform, func(t *testing.T) {
			qemu, err := exec.LookPath(tc.qemu)
			if err != nil {
				t.Fatalf("%s not found: run test/scripts/ensure-deps.sh as root (sudo apt-get install -y qemu-user-static)", tc.qemu)
			}
			p, _ := dist.ParsePlatform(tc.platform)
			b := distBinaries(t, p, false)
			var v struct{ Version, Platform string }
			if err := json.Unmarshal([]byte(mustRun(qemu, b.Berth, "version", "--output", "json")), &v); err != nil || v.Platform != tc.platform {
				t.Errorf("berth version under %s: %+v, %v", tc.qemu, v, err)
			}
			out := filepath.Join(work, p.Slug())
			mustRun(qemu, b.Berth, "pull", url, "--key", filepath.Join(work, "cosign.pub"), "-o", out, "--insecure")
			if got, err := os.ReadFile(filepath.Join(out, "hello.txt")); err != nil || string(got) != "hello, arm\n" {
				t.Errorf("pulled hello.txt = %q, %v", got, err)
			}
		})
	}
}

// TestDistDeb checks the Debian package with dpkg-deb: its fields, the
// conffile, the files and their modes, the maintainer scripts, and that
// the binaries it holds run and its agent.yaml parses.
func TestDistDeb(t *testing.T) {
	dpkgDeb, err := exec.LookPath("dpkg-deb")
	if err != nil {
		t.Fatal("dpkg-deb not found: sudo apt-get install -y dpkg")
	}
	var deb string
	if d := os.Getenv(distDirEnv); d != "" {
		m, _ := filepath.Glob(filepath.Join(d, "berth_*_amd64.deb"))
		if len(m) != 1 {
			t.Fatalf("%s holds %d amd64 .deb files: run make dist", d, len(m))
		}
		deb = m[0]
	} else {
		docs := t.TempDir()
		if err := cli.WriteDocs(docs); err != nil {
			t.Fatal(err)
		}
		p := dist.Platform{OS: "linux", Arch: "amd64"}
		deb, err = dist.Deb(distBinaries(t, p, true), "1.2.3", docs, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
	}
	dpkg := func(args ...string) string {
		t.Helper()
		out, errOut, code := testenv.Run(t, dpkgDeb, nil, args...)
		if code != 0 {
			t.Fatalf("dpkg-deb %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	if got := dpkg("--field", deb, "Package", "Architecture"); got != "Package: berth\nArchitecture: amd64\n" {
		t.Errorf("fields %q", got)
	}
	ctl := t.TempDir()
	dpkg("--control", deb, ctl)
	if c, _ := os.ReadFile(filepath.Join(ctl, "conffiles")); strings.TrimSpace(string(c)) != dist.DebConfig {
		t.Errorf("conffiles %q, want %s", c, dist.DebConfig)
	}
	if pre, _ := os.ReadFile(filepath.Join(ctl, "preinst")); !strings.Contains(string(pre), "adduser --system --group") {
		t.Errorf("preinst does not add the berth system user:\n%s", pre)
	}
	contents := dpkg("--contents", deb)
	for _, want := range []string{
		"-rwxr-xr-x root/root", "." + dist.DebBerth, "." + dist.DebAgent, "." + dist.DebUnit,
		"-rw-r----- root/berth", "." + dist.DebConfig, "." + dist.DebBashComp, "." + dist.DebZshComp, "." + dist.DebFishComp,
		"." + dist.DebManDir + "/berth.1", "." + dist.DebManDir + "/berth-push.1", "." + dist.DebManDir + "/berth-agent.1",
	} {
		if !strings.Contains(contents, want) {
			t.Errorf("package contents lack %q:\n%s", want, contents)
		}
	}
	root := t.TempDir()
	dpkg("-x", deb, root)
	for _, bin := range []string{dist.DebBerth, dist.DebAgent} {
		out, errOut, code := testenv.Run(t, filepath.Join(root, bin), nil, "version")
		if code != 0 || !strings.Contains(out, "linux/amd64") {
			t.Errorf("%s version: exit %d, %q %q", bin, code, out, errOut)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(root, dist.DebUnit))
	for _, want := range []string{"ExecStart=" + dist.DebAgent + " --config " + dist.DebConfig, "User=berth", "Type=notify"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	if _, err := config.Parse("agent.yaml", mustRead(t, filepath.Join(root, dist.DebConfig))); err != nil {
		t.Errorf("the packaged agent.yaml does not parse: %v", err)
	}
}

// TestDistImage pushes the agent image's index to a loopback registry,
// checks its platforms, and runs berth-agent version from it on the local
// Docker Engine.
func TestDistImage(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{Plain: true, NoAuth: true})
	docker := testenv.Docker(t)
	var want []string
	if d := os.Getenv(distDirEnv); d != "" {
		p, err := layout.FromPath(filepath.Join(d, "image"))
		if err != nil {
			t.Fatalf("%s/image: %v (run make dist)", d, err)
		}
		idx, err := p.ImageIndex()
		if err != nil {
			t.Fatal(err)
		}
		// layout.Write keeps the image index itself as index.json.
		if err := dist.Push(context.Background(), reg.Host()+"/berth/agent:test", idx, true); err != nil {
			t.Fatal(err)
		}
		want = []string{"linux/amd64", "linux/arm64", "linux/arm/v7"}
	} else {
		var bins []dist.Binaries
		for _, p := range []dist.Platform{{OS: "linux", Arch: "amd64"}, {OS: "linux", Arch: "arm64"}} {
			bins = append(bins, distBinaries(t, p, true))
			want = append(want, p.String())
		}
		idx, err := dist.Image(bins, "test")
		if err != nil {
			t.Fatal(err)
		}
		if err := dist.Push(context.Background(), reg.Host()+"/berth/agent:test", idx, true); err != nil {
			t.Fatal(err)
		}
	}
	ref := reg.Host() + "/berth/agent:test"
	r, _ := name.ParseReference(ref, name.Insecure)
	idx, err := remote.Index(r)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex {
		t.Errorf("index media type %s", im.MediaType)
	}
	var got []string
	for _, m := range im.Manifests {
		got = append(got, m.Platform.OS+"/"+m.Platform.Architecture+map[bool]string{true: "/" + m.Platform.Variant}[m.Platform.Variant != ""])
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("index platforms %v, want %v", got, want)
	}

	docker.PullImage(t, nil, ref)
	t.Cleanup(func() { docker.RemoveImage(t, ref) })
	var created struct{ ID string }
	docker.Do(t, http.MethodPost, "/containers/create", map[string]any{"Image": ref, "Cmd": []string{"version", "--output", "json"}}, &created)
	t.Cleanup(func() { docker.RemoveContainer(t, created.ID) })
	docker.Do(t, http.MethodPost, "/containers/"+created.ID+"/start", nil, nil)
	var waited struct{ StatusCode int }
	docker.Do(t, http.MethodPost, "/containers/"+created.ID+"/wait", nil, &waited)
	logs := docker.Logs(t, created.ID, 0)
	var v struct {
		Platform string
		Appliers []string
	}
	if waited.StatusCode != 0 || json.Unmarshal([]byte(logs), &v) != nil || v.Platform != "linux/amd64" || !slices.Equal(v.Appliers, []string{"compose", "helm"}) {
		t.Errorf("docker run %s version: exit %d, output %q", ref, waited.StatusCode, logs)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
