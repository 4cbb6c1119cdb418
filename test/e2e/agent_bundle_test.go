package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/apply/compose"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/source/bundle"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/oci"
)

// TestAgentBundleSource: a file:// source converges with no registry
// running at all, the Compose app served from the images the bundle
// carries, loaded into the real Docker Engine; a bundle with an altered
// image layer, an unsigned one and one signed with another key are
// refused.
func TestAgentBundleSource(t *testing.T) {
	c := newComposeEnv(t)
	c.state(webApp, map[string]string{"apps/web/compose.yaml": c.webCompose(c.images["v1"], "from the usb stick", false)})
	good := c.publish("stable", c.key, 1)
	unsigned := c.publish("unsigned", "", 2)

	dir := t.TempDir()
	goodFile := c.createBundle(filepath.Join(dir, "good.tar"), "fleet/line-3:stable")
	unsignedFile := c.createBundle(filepath.Join(dir, "unsigned.tar"), "fleet/line-3:unsigned")
	alteredFile := filepath.Join(dir, "altered.tar")
	image, layer := bundleImageLayer(t, goodFile)
	copyBundle(t, goodFile, alteredFile)
	testenv.AlterBundleBlob(t, alteredFile, layer)

	// From here on there is no registry, and the engine does not have the
	// image.
	c.reg.Stop()
	tag, _ := compose.BundleTag(image)
	removeImage := func() {
		c.docker.RemoveProjectResources(t, "berth-line-3-")
		c.docker.RemoveImage(t, tag)
		c.docker.RemoveImage(t, image)
	}
	removeImage()
	t.Cleanup(removeImage)

	_, otherPub := c.keyPair("other")
	for _, tc := range []struct {
		name, file, key, digest, want string
	}{
		{"unsigned", unsignedFile, c.pub, unsigned, "no signature found"},
		{"wrong key", goodFile, otherPub, good, "no signature verifies"},
		{"altered image layer", alteredFile, c.pub, good, layer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.writeBundleConfig(tc.file, tc.key)
			res, code := c.once()
			if code == 0 || res.Outcome != "refused" || res.Digest != tc.digest || !strings.Contains(res.Error, tc.want) {
				t.Fatalf("agent --once = %+v (exit %d), want refused %s with %q", res, code, tc.digest, tc.want)
			}
			if cs := c.containers(); len(cs) != 0 {
				t.Fatalf("containers after a refused bundle: %+v", cs)
			}
			if c.docker.ImagePresent(t, tag) {
				t.Fatalf("an altered image was loaded as %s", tag)
			}
		})
	}

	// The good bundle converges: verified, applied, the app served from
	// the loaded image.
	c.writeBundleConfig(goodFile, c.pub)
	c.expectApplied(good)
	c.waitServing("from the usb stick")
	if cs := c.containers(); len(cs) != 1 || cs[0].Image != tag {
		t.Fatalf("containers = %+v, want one running %s", cs, tag)
	}
	text := c.ok("status", "--config", c.cfgPath)
	if !strings.Contains(text, "via:      bundle (manifest, signatures, layer)") {
		t.Errorf("status does not show the bundle:\n%s", text)
	}

	// An unchanged bundle: unchanged, and the stick pulled out leaves the
	// app running.
	if res, code := c.once(); code != 0 || res.Outcome != "unchanged" {
		t.Fatalf("second run = %+v (exit %d), want unchanged", res, code)
	}
	if err := os.Rename(goodFile, goodFile+".away"); err != nil {
		t.Fatal(err)
	}
	res, code := c.once()
	if code == 0 || res.Outcome != "error" || !strings.Contains(res.Error, "mounted") {
		t.Fatalf("without the file = %+v (exit %d), want an error", res, code)
	}
	if c.current() != good || c.serving() != "from the usb stick" {
		t.Fatal("a missing bundle changed the device")
	}
}

// createBundle makes a bundle of repoAndTag with the bundle package, as
// `berth bundle create` does, and returns its path.
func (c *composeEnv) createBundle(out, repoAndTag string) string {
	c.t.Helper()
	client, err := oci.NewClient(oci.Options{DockerConfig: c.reg.DockerConfig, CAFile: c.reg.CAFile})
	if err != nil {
		c.t.Fatal(err)
	}
	ref, err := oci.ParseReference(c.reg.Host() + "/" + repoAndTag)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx := context.Background()
	state, err := (&deliver.Remote{Client: client}).Fetch(ctx, ref, nil, true)
	if err != nil {
		c.t.Fatalf("fetch %s: %v", ref, err)
	}
	b, err := bundle.Create(ctx, client, bundle.CreateOptions{State: state, Output: out})
	if err != nil {
		c.t.Fatalf("bundle.Create %s: %v", ref, err)
	}
	b.Close()
	return out
}

// writeBundleConfig writes an agent configuration whose only source is
// the bundle file, applied by the Compose applier, in a new state folder.
func (c *composeEnv) writeBundleConfig(file, pub string) {
	c.t.Helper()
	c.stateDir = filepath.Join(c.t.TempDir(), "state")
	cfg := fmt.Sprintf(`stateDir: %s
sources:
  - name: line-3
    url: file://%s
    interval: 2s
    timeout: 30s
    verify: {keys: [%s]}
apply:
  compose: {waitTimeout: 20s}
`, c.stateDir, file, pub)
	c.cfgPath = filepath.Join(filepath.Dir(c.stateDir), "agent.yaml")
	if err := os.WriteFile(c.cfgPath, []byte(cfg), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// bundleImageLayer returns the bundle's image (repo@digest) and the digest
// of the layer of its manifest for this machine's platform.
func bundleImageLayer(t *testing.T, file string) (image, layer string) {
	t.Helper()
	b, err := bundle.Open(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	images := b.Images()
	if len(images) != 1 {
		t.Fatalf("bundle images = %q, want one", images)
	}
	d, err := name.NewDigest(images[0])
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(d, remote.WithTransport(b.Transport()), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}))
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) == 0 {
		t.Fatalf("layers: %v", err)
	}
	ld, _ := layers[0].Digest()
	return images[0], ld.String()
}

func copyBundle(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
