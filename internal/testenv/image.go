package testenv

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// HelloMessage is what the hello image (test/images/hello) answers on /
// unless its MESSAGE is set.
const HelloMessage = "hello from berth"

// HelloPort is the port the hello image listens on unless PORT is set.
const HelloPort = "8080/tcp"

// ImageOptions shape an image made by ScratchImage and PushImage. The zero
// value is one image for linux/GOARCH of the test, with HelloPort exposed.
type ImageOptions struct {
	// Env is added to the image config ("KEY=VALUE").
	Env []string
	// Labels are image labels. Two images that differ only by a label are
	// distinct images (distinct digests) running the same binary.
	Labels map[string]string
	// Cmd is the image's CMD: arguments after the entrypoint.
	Cmd []string
	// ExposedPorts replaces the default []string{HelloPort}.
	ExposedPorts []string
	// Platforms ("linux/amd64", "linux/arm64/v8", ...) makes PushImage push
	// a multi-platform index with one image per platform instead of one
	// image. Each image holds the binary PushImage was given unless
	// PlatformBinaries names another for its platform (see BuildHelloFor).
	Platforms        []string
	PlatformBinaries map[string]string
}

// hostPlatform is linux on the architecture the test runs on.
func hostPlatform() string { return "linux/" + runtime.GOARCH }

var helloBuilds struct {
	mu    sync.Mutex
	paths map[string]string // platform → binary
}

// BuildHello builds test/images/hello, the tiny web app of the examples and
// end-to-end tests, as a static linux binary (CGO_ENABLED=0) for this
// machine's architecture, once per test process, and returns its path
// (named "hello", in the dir BuildBerth uses).
func BuildHello(t testing.TB) string {
	t.Helper()
	return BuildHelloFor(t, hostPlatform())
}

// BuildHelloFor is BuildHello for another platform, "linux/arm64" say, to
// put in ImageOptions.PlatformBinaries.
func BuildHelloFor(t testing.TB, platform string) string {
	t.Helper()
	p, err := v1.ParsePlatform(platform)
	if err != nil || p.OS == "" || p.Architecture == "" {
		t.Fatalf("testenv: platform %q: want OS/ARCH[/VARIANT]", platform)
	}
	helloBuilds.mu.Lock()
	defer helloBuilds.mu.Unlock()
	if bin, ok := helloBuilds.paths[platform]; ok {
		return bin
	}
	root, err := findModuleRoot(".")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	dir, err := buildDir()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	sub := filepath.Join(dir, "hello-"+strings.ReplaceAll(platform, "/", "-"))
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	out := filepath.Join(sub, "hello")
	env := []string{"CGO_ENABLED=0", "GOOS=" + p.OS, "GOARCH=" + p.Architecture}
	if p.Architecture == "arm" && strings.HasPrefix(p.Variant, "v") {
		env = append(env, "GOARM="+strings.TrimPrefix(p.Variant, "v"))
	}
	if err := goBuild(root, "./test/images/hello", out, env...); err != nil {
		t.Fatalf("testenv: build hello for %s: %v", platform, err)
	}
	if helloBuilds.paths == nil {
		helloBuilds.paths = map[string]string{}
	}
	helloBuilds.paths[platform] = out
	return out
}

// PushImage pushes an image FROM scratch with one layer, binary at
// /<binary's name>, which is the entrypoint, to reg with reg's CA and
// credentials, and returns its digest ("sha256:..."): the image's, or with
// opts.Platforms the index's. ref is "REPO:TAG" on reg, or a full
// "HOST:PORT/REPO:TAG" of reg.
//
//	hello := testenv.BuildHello(t)
//	v1 := testenv.PushImage(t, reg, "acme/hello:v1", hello, testenv.ImageOptions{})
//	v2 := testenv.PushImage(t, reg, "acme/hello:v2", hello, testenv.ImageOptions{Labels: map[string]string{"v": "2"}})
func PushImage(t testing.TB, reg *Registry, ref, binary string, opts ImageOptions) string {
	t.Helper()
	full := ref
	if !strings.HasPrefix(ref, reg.Host()+"/") {
		full = reg.Ref(ref)
	}
	var nopts []name.Option
	if reg.Plain() {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(full, nopts...)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	auth := authn.Anonymous
	if reg.Username != "" {
		auth = &authn.Basic{Username: reg.Username, Password: reg.Password}
	}
	d, err := PushScratchImage(r, binary, opts, remote.WithAuth(auth), remote.WithTransport(reg.HTTPClient().Transport))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return d.String()
}

// PushScratchImage is PushImage for any registry: it pushes the image (or
// index) that ScratchImage (ScratchIndex) makes to ref with the remote
// options (credentials, transport) and returns its digest.
func PushScratchImage(ref name.Reference, binary string, opts ImageOptions, ropts ...remote.Option) (v1.Hash, error) {
	if len(opts.Platforms) > 0 {
		idx, err := ScratchIndex(binary, opts)
		if err != nil {
			return v1.Hash{}, err
		}
		if err := remote.WriteIndex(ref, idx, ropts...); err != nil {
			return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
		}
		return idx.Digest()
	}
	img, err := ScratchImage(binary, "", opts)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Write(ref, img, ropts...); err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	return img.Digest()
}

// ScratchIndex makes a multi-platform index (Docker manifest list) of one
// ScratchImage for each of opts.Platforms.
func ScratchIndex(binary string, opts ImageOptions) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.DockerManifestList)
	for _, platform := range opts.Platforms {
		bin := binary
		if b, ok := opts.PlatformBinaries[platform]; ok {
			bin = b
		}
		img, err := scratchImage(bin, "/"+path.Base(binary), platform, opts)
		if err != nil {
			return nil, err
		}
		p, _ := v1.ParsePlatform(platform)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	return idx, nil
}

// ScratchImage makes a single-layer image FROM scratch: binary at
// /<binary's name>, the entrypoint, for platform ("" is linux/GOARCH), with
// the env, labels, command and ports of opts (Platforms are ignored). The
// same inputs give the same digest.
func ScratchImage(binary, platform string, opts ImageOptions) (v1.Image, error) {
	if platform == "" {
		platform = hostPlatform()
	}
	return scratchImage(binary, "/"+path.Base(binary), platform, opts)
}

func scratchImage(binary, entry, platform string, opts ImageOptions) (v1.Image, error) {
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		return nil, fmt.Errorf("platform %q: %w", platform, err)
	}
	data, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{Name: entry[1:], Mode: 0o755, Size: int64(len(data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Variant = p.OS, p.Architecture, p.Variant
	cfg.Config.Entrypoint = []string{entry}
	cfg.Config.Cmd = opts.Cmd
	cfg.Config.Env = opts.Env
	if len(opts.Labels) > 0 {
		cfg.Config.Labels = map[string]string{}
		for k, v := range opts.Labels {
			cfg.Config.Labels[k] = v
		}
	}
	ports := opts.ExposedPorts
	if ports == nil {
		ports = []string{HelloPort}
	}
	if len(ports) > 0 {
		cfg.Config.ExposedPorts = map[string]struct{}{}
		for _, port := range ports {
			cfg.Config.ExposedPorts[port] = struct{}{}
		}
	}
	return mutate.ConfigFile(img, cfg)
}
