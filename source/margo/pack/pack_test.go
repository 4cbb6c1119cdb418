package pack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/oci"
)

func newRegistry(t *testing.T) (string, *oci.Client) {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	c, err := oci.NewClient(oci.Options{Insecure: true, DockerConfig: filepath.Join(t.TempDir(), "config.json")})
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(srv.URL, "http://"), c
}

func write(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func manifestOf(t *testing.T, c *oci.Client, url string) *ocispec.Manifest {
	t.Helper()
	ref, err := oci.ParseReference(url)
	if err != nil {
		t.Fatal(err)
	}
	_, m, err := c.Manifest(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestComposeArchive(t *testing.T) {
	host, c := newRegistry(t)
	dir := t.TempDir()
	write(t, dir, map[string]string{"compose.yaml": "services: {web: {image: x:1}}\n", "config/app.env": "A=1\n"})
	ref, _ := oci.ParseReference("oci://" + host + "/acme/collector:1.4.0_build.7")
	p1, err := PushComposeArchive(context.Background(), c, ComposeOptions{Dir: dir, Ref: ref})
	if err != nil {
		t.Fatal(err)
	}
	// Reproducible: a copy of the folder made later gives the same digest.
	dir2 := t.TempDir()
	write(t, dir2, map[string]string{"config/app.env": "A=1\n", "compose.yaml": "services: {web: {image: x:1}}\n"})
	os.Chmod(filepath.Join(dir2, "compose.yaml"), 0o600)
	p2, err := PushComposeArchive(context.Background(), c, ComposeOptions{Dir: dir2, Ref: ref})
	if err != nil {
		t.Fatal(err)
	}
	if p1.Digest != p2.Digest || p1.LayerDigest != p2.LayerDigest {
		t.Errorf("not reproducible: %s %s", p1.Digest, p2.Digest)
	}
	m := manifestOf(t, c, p1.URL)
	if m.ArtifactType != ComposeArtifactType || m.Config.MediaType != ocispec.MediaTypeEmptyJSON || len(m.Layers) != 1 || m.Layers[0].MediaType != ComposeLayerType {
		t.Fatalf("manifest = %+v", m)
	}
	a := m.Layers[0].Annotations
	if a[AnnotationType] != "compose" || a[AnnotationVersion] != "1.4.0_build.7" {
		t.Errorf("annotations = %v", a)
	}
	// One top-level folder, named after the repository.
	rc, err := c.OpenBlob(context.Background(), ref, m.Layers[0], 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := filepath.Join(t.TempDir(), "x")
	if _, err := archive.ExtractAtomic(context.Background(), rc, out, archive.Limits{}); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(out)
	if len(entries) != 1 || entries[0].Name() != "collector" {
		t.Fatalf("top level = %v", entries)
	}
	if _, err := os.Stat(filepath.Join(out, "collector", "config", "app.env")); err != nil {
		t.Error(err)
	}

	bad := []struct {
		name, dir, tag, want string
	}{
		{"no compose.yaml", t.TempDir(), "1.0.0", "has no compose.yaml"},
		{"v prefix", dir, "v1.0.0", "not a SemVer 2.0 version"},
		{"plus", dir, "1.0.0+b", "write + as _"},
	}
	for _, b := range bad {
		r := ref.WithTag(b.tag)
		if b.tag == "1.0.0+b" {
			r.Tag = b.tag
		}
		if _, err := PushComposeArchive(context.Background(), c, ComposeOptions{Dir: b.dir, Ref: r}); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%s: err = %v, want %q", b.name, err, b.want)
		}
	}
}

func TestPackage(t *testing.T) {
	host, c := newRegistry(t)
	dir := t.TempDir()
	desc := `apiVersion: margo.org/v1-alpha1
kind: ApplicationDescription
id: acme-line-monitor
metadata:
  name: Line monitor
  version: 1.4.0
  catalog:
    application: {icon: resources/icon.png, licenseFile: resources/license.md, tagline: watches lines}
    organization: [{name: Acme}]
deploymentProfiles:
  - type: compose
    id: compose
    components:
      - name: collector
        properties: {repository: oci://HOST/acme/collector, revision: 1.4.0}
  - type: helm.v3
    id: helm
    components:
      - name: monitor
        properties: {repository: oci://HOST/acme/charts/monitor, revision: 0.3.0}
`
	write(t, dir, map[string]string{
		"margo.yaml":                     strings.ReplaceAll(desc, "HOST", host),
		"resources/icon.png":             "\x89PNG...",
		"resources/license.md":           "# MIT\n",
		"compose/collector/compose.yaml": "services: {c: {image: x:1}}\n",
		"helm/monitor/Chart.yaml":        "apiVersion: v2\nname: monitor\nversion: 0.3.0\ndescription: a chart\n",
		"helm/monitor/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
	})
	ref, _ := oci.ParseReference("oci://" + host + "/acme/apps/line-monitor")
	r1, err := PushPackage(context.Background(), c, PackageOptions{Dir: dir, Ref: ref})
	if err != nil {
		t.Fatal(err)
	}
	if r1.Package.Tag != "1.4.0" || len(r1.Components) != 2 || r1.Components[0].Kind != "compose" || r1.Components[1].Kind != "helm" {
		t.Fatalf("result = %+v", r1)
	}
	r2, err := PushPackage(context.Background(), c, PackageOptions{Dir: dir, Ref: ref.WithTag("1.4.0")})
	if err != nil {
		t.Fatal(err)
	}
	if r1.Package.Digest != r2.Package.Digest || r1.Components[1].Digest != r2.Components[1].Digest {
		t.Errorf("not reproducible: %+v vs %+v", r1, r2)
	}
	m := manifestOf(t, c, r1.Package.URL)
	if m.ArtifactType != AppArtifactType || m.Config.MediaType != ocispec.MediaTypeEmptyJSON || m.Config.Size != 2 || len(m.Layers) != 3 {
		t.Fatalf("package manifest = %+v", m)
	}
	want := []string{DescriptionLayerType, "application/vnd.margo.app.icon.v1+png", "application/vnd.margo.app.licenseFile.v1+markdown"}
	for i, l := range m.Layers {
		if l.MediaType != want[i] {
			t.Errorf("layer %d = %s, want %s", i, l.MediaType, want[i])
		}
	}
	if m.Layers[1].Annotations[AnnotationResource] != "metadata.catalog.application.icon" || m.Layers[1].Annotations[ocispec.AnnotationTitle] != "resources/icon.png" {
		t.Errorf("icon annotations = %v", m.Layers[1].Annotations)
	}
	hm := manifestOf(t, c, r1.Components[1].URL)
	if hm.Config.MediaType != HelmConfigMediaType || hm.Layers[0].MediaType != HelmChartLayerType {
		t.Errorf("chart manifest = %+v", hm)
	}
	var meta map[string]any
	cref, _ := oci.ParseReference(r1.Components[1].URL)
	rc, err := c.OpenBlob(context.Background(), cref, hm.Config, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if json.Unmarshal(b, &meta); meta["version"] != "0.3.0" || meta["name"] != "monitor" {
		t.Errorf("chart config = %s", b)
	}

	// Wrong tag, and a component neither in the folder nor the registry.
	if _, err := PushPackage(context.Background(), c, PackageOptions{Dir: dir, Ref: ref.WithTag("1.5.0")}); err == nil || !strings.Contains(err.Error(), "must equal metadata.version") {
		t.Errorf("wrong tag: %v", err)
	}
	os.RemoveAll(filepath.Join(dir, "compose"))
	os.WriteFile(filepath.Join(dir, "margo.yaml"), bytes.ReplaceAll([]byte(strings.ReplaceAll(desc, "HOST", host)), []byte("collector, revision: 1.4.0"), []byte("collector, revision: 9.9.9")), 0o644)
	if _, err := PushPackage(context.Background(), c, PackageOptions{Dir: dir, Ref: ref}); err == nil || !strings.Contains(err.Error(), "no folder compose/collector/") {
		t.Errorf("missing component: %v", err)
	}
}

func TestComposeArchiveIgnore(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{
		"compose.yaml": "services: {}\n", ".berthignore": "*.md\n/secret\n!keep.md\n",
		"README.md": "x", "sub/notes.md": "x", "keep.md": "x", "secret/k": "x", "sub/secret/k": "x",
	})
	var buf bytes.Buffer
	if _, err := BuildComposeArchive(context.Background(), dir, "web", &buf); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "x")
	if _, err := archive.ExtractAtomic(context.Background(), &buf, out, archive.Limits{}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{"web/compose.yaml": true, "web/keep.md": true, "web/sub/secret/k": true, "web/README.md": false, "web/sub/notes.md": false, "web/secret/k": false, "web/.berthignore": false} {
		_, err := os.Stat(filepath.Join(out, filepath.FromSlash(p)))
		if (err == nil) != want {
			t.Errorf("%s present = %v, want %v", p, err == nil, want)
		}
	}
}

// failingSigner is a key whose signatures fail, as a KMS that is down.
type failingSigner struct{ signature.SignerVerifier }

func (failingSigner) SignMessage(io.Reader, ...signature.SignOption) ([]byte, error) {
	return nil, errors.New("the KMS is down")
}

// TestSignBeforeTag: the manifest is pushed by digest, signed, and only
// then tagged; a signature that fails leaves the revision untagged, so
// nothing tracking it sees an unsigned component.
func TestSignBeforeTag(t *testing.T) {
	host, c := newRegistry(t)
	ctx := context.Background()
	priv, pub, err := cosign.GenerateKeyPair([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	kf := filepath.Join(t.TempDir(), "cosign.key")
	os.WriteFile(kf, priv, 0o600)
	sv, err := cosign.LoadPrivateKey(kf, func() ([]byte, error) { return []byte("pw"), nil })
	if err != nil {
		t.Fatal(err)
	}
	k, _ := cosign.ParsePublicKey("cosign.pub", pub)
	policy := cosign.Policy{Keys: []cosign.Key{k}}
	dir := t.TempDir()
	write(t, dir, map[string]string{"compose.yaml": "services: {web: {image: x:1}}\n"})

	for _, tc := range []struct {
		name   string
		signer *deliver.Signer
		tagged bool
	}{
		{"signature fails", &deliver.Signer{Key: failingSigner{sv}, Format: cosign.FormatBundle}, false},
		{"signed", &deliver.Signer{Key: sv, Format: cosign.FormatLegacy}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref, _ := oci.ParseReference("oci://" + host + "/acme/" + strings.ReplaceAll(tc.name, " ", "-") + ":1.0.0")
			p, err := PushComposeArchive(ctx, c, ComposeOptions{Dir: dir, Ref: ref, Signer: tc.signer})
			_, rerr := c.Resolve(ctx, ref)
			if !tc.tagged {
				if err == nil || !strings.Contains(err.Error(), "the KMS is down") || !strings.Contains(err.Error(), "pushed but not tagged") {
					t.Fatalf("push with a failing signature: %v", err)
				}
				if !errors.Is(rerr, oci.ErrNotFound) {
					t.Fatalf("the tag exists after a failed signature: %v", rerr)
				}
				return
			}
			if err != nil || !p.Signed {
				t.Fatalf("push: %+v %v", p, err)
			}
			if rerr != nil {
				t.Fatalf("not tagged: %v", rerr)
			}
			pinned, _ := oci.ParseReference(p.URL)
			if _, err := (&deliver.Remote{Client: c}).Verify(ctx, pinned, policy); err != nil {
				t.Errorf("the signature does not verify: %v", err)
			}
		})
	}
}
