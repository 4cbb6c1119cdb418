package compose

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/source/oci"
)

func TestBundleTag(t *testing.T) {
	const dg = "sha256:3f1c6e0e9d3a2b1c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4"
	for _, tc := range []struct{ ref, want string }{
		{"ghcr.io/acme/web:1.2@" + dg, "ghcr.io/acme/web:berth-sha256-3f1c6e0e9d3a2b1c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4"},
		{"ghcr.io/acme/web@" + dg, "ghcr.io/acme/web:berth-sha256-3f1c6e0e9d3a2b1c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4"},
		{"nginx@" + dg, "docker.io/library/nginx:berth-sha256-3f1c6e0e9d3a2b1c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4"},
		{"127.0.0.1:5000/a/b:v1@" + dg, "127.0.0.1:5000/a/b:berth-sha256-3f1c6e0e9d3a2b1c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4"},
		{"ghcr.io/acme/web:1.2", ""},
		{"not a ref", ""},
	} {
		got, ok := BundleTag(tc.ref)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("BundleTag(%q) = %q, %v; want %q", tc.ref, got, ok, tc.want)
		}
	}
}

func TestOCIArch(t *testing.T) {
	for machine, want := range map[string]string{"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm/v7", "armv6l": "arm/v6", "i686": "386", "riscv64": "riscv64"} {
		arch, variant := ociArch(machine)
		got := arch
		if variant != "" {
			got += "/" + variant
		}
		if got != want {
			t.Errorf("ociArch(%q) = %s, want %s", machine, got, want)
		}
	}
}

// countingTransport counts requests and can alter the bytes of blobs.
type countingTransport struct {
	n      atomic.Int64
	tamper atomic.Bool
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil || !c.tamper.Load() || !strings.Contains(r.URL.Path, "/blobs/") || r.Method != http.MethodGet || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if len(body) > 0 && bytes.HasPrefix(body, []byte{0x1f, 0x8b}) {
		body[len(body)/2] ^= 0xff // a layer: same size, other bytes
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// TestLoadBundleImages loads a multi-platform image into the real engine
// the way a bundle source does (through a registry transport: the bundle's
// in the agent, a plain registry's here), then runs an app on it with no
// registry at all.
func TestLoadBundleImages(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	docker := testenv.Docker(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{Plain: true, NoAuth: true})
	hello := testenv.BuildHello(t)
	other := "linux/arm64"
	if runtime.GOARCH == "arm64" {
		other = "linux/amd64"
	}
	repo := "acme/" + runID + "/bundled"
	opts := testenv.ImageOptions{Env: []string{"MESSAGE=from the bundle"}, Platforms: []string{other, "linux/" + runtime.GOARCH}}
	idx := testenv.PushImage(t, reg, repo+":v1", hello, opts)
	ref := reg.Host() + "/" + repo + "@" + idx
	tag, _ := BundleTag(ref)
	written := reg.Host() + "/" + repo + ":v1@" + idx

	opts.Labels = map[string]string{"v": "2"}
	idx2 := testenv.PushImage(t, reg, repo+":v2", hello, opts)
	ref2 := reg.Host() + "/" + repo + "@" + idx2
	tag2, _ := BundleTag(ref2)
	t.Cleanup(func() {
		cleanup(t, f.dc)
		docker.RemoveImage(t, tag)
		docker.RemoveImage(t, tag2)
	})
	docker.RemoveImage(t, tag)
	docker.RemoveImage(t, tag2)

	a, err := New(ctx, Options{Host: dockerHost(), WaitTimeout: 30 * time.Second, EnvDir: t.TempDir(),
		Log: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	rt := &countingTransport{}

	// An altered layer is refused, naming the blob; nothing is tagged.
	hostPlatform := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	d2, _ := name.NewDigest(ref2, name.Insecure)
	img2, err := remote.Image(d2, remote.WithPlatform(hostPlatform))
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img2.Layers()
	layer, _ := layers[0].Digest()
	rt.tamper.Store(true)
	err = a.LoadImages(ctx, []string{ref2}, rt)
	if !errors.Is(err, oci.ErrDigestMismatch) || !strings.Contains(err.Error(), layer.String()) {
		t.Fatalf("altered layer: %v, want a digest mismatch naming the layer %s", err, layer)
	}
	if docker.ImagePresent(t, tag2) {
		t.Error("an image with an altered layer was loaded")
	}
	rt.tamper.Store(false)

	// Loaded under its bundle tag, the engine's platform picked from the
	// index, the image ID the config of that manifest.
	if err := a.LoadImages(ctx, []string{ref}, rt); err != nil {
		t.Fatalf("LoadImages: %v", err)
	}
	d, _ := name.NewDigest(ref, name.Insecure)
	img, err := remote.Image(d, remote.WithPlatform(hostPlatform))
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigName()
	res, err := f.dc.ImageInspect(ctx, tag)
	if err != nil || res.ID != cfg.String() {
		t.Fatalf("inspect %s: %v, id %s, want %s", tag, err, res.ID, cfg)
	}

	// Present: a second load reads nothing.
	n := rt.n.Load()
	if err := a.LoadImages(ctx, []string{ref}, rt); err != nil || rt.n.Load() != n {
		t.Errorf("second load: %v, %d requests", err, rt.n.Load()-n)
	}

	// No registry at all: the app runs the loaded image.
	reg.Stop()
	src := source("bundle")
	port := freePort(t)
	rev := revision(t, src, "v1", stateYAML("web"), map[string]string{"apps/web/compose.yaml": webCompose(written, port)})
	if _, err := a.Apply(ctx, rev, nil); err != nil {
		t.Fatalf("apply without a registry: %v", err)
	}
	if got := get(t, port); got != "from the bundle" {
		t.Errorf("serves %q", got)
	}
	if c := f.serviceContainer(ProjectName(src, "web"), "web"); c.image != tag {
		t.Errorf("container image %q, want the bundle tag %q", c.image, tag)
	}
}
