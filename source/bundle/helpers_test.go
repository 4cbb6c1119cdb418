package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/berth-dev/berth/internal/signtest"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/lock"
	"github.com/berth-dev/berth/source/oci"
)

// Helm's OCI media types.
const (
	helmConfigType = "application/vnd.cncf.helm.config.v1+json"
	helmChartType  = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
)

// startRegistry serves go-containerregistry's in-memory registry, with or
// without the OCI referrers API, and returns its 127.0.0.1:PORT host.
func startRegistry(t testing.TB, referrers bool) string { return signtest.Registry(t, referrers) }

// newClient is a plain-HTTP client with an empty Docker config.
func newClient(t testing.TB) *oci.Client {
	t.Helper()
	c, err := oci.NewClient(oci.Options{Insecure: true, DockerConfig: filepath.Join(t.TempDir(), "config.json")})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testKey is a signing key and its public key.
type testKey struct {
	sv     signature.SignerVerifier
	key    cosign.Key
	pubPEM []byte
}

func newTestKey(t testing.TB) testKey {
	t.Helper()
	sk := signtest.NewKey(t)
	k, err := cosign.ParsePublicKey("test.pub", sk.PublicPEM)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{sv: sk.Signer, key: k, pubPEM: sk.PublicPEM}
}

// fixture is a signed state on a registry whose lock names a
// two-platform image index, a single image sharing layers with it and a
// Helm chart.
type fixture struct {
	host   string
	client *oci.Client
	key    testKey

	state    oci.Reference // HOST/fleet/line-3:v1
	stateDig digest.Digest
	web      string // HOST/acme/web, an index (linux/amd64, linux/arm64)
	webIdx   digest.Digest
	webKids  map[string]digest.Digest // platform → child manifest
	worker   string                   // HOST/acme/worker, one image
	workerD  digest.Digest
	chart    string // HOST/charts/metrics
	chartD   digest.Digest
	shared   digest.Digest // a layer of web's amd64 image that worker has too
}

// newFixture builds the fixture on host, signing the state in both
// formats.
func newFixture(t testing.TB, host string, c *oci.Client) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{host: host, client: c, key: newTestKey(t), webKids: map[string]digest.Digest{}}
	ropts := c.RemoteOptions(ctx)
	nopts := c.NameOptions()
	mustRef := func(s string) name.Reference {
		r, err := name.ParseReference(s, nopts...)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// The web image: an index of two random images.
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var amd64 v1.Image
	for _, p := range []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}} {
		img, err := random.Image(3000, 2)
		if err != nil {
			t.Fatal(err)
		}
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
		if p.Architecture == "amd64" {
			amd64 = img
		}
		h, _ := img.Digest()
		f.webKids[p.OS+"/"+p.Architecture] = digest.Digest(h.String())
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	f.web = host + "/acme/web"
	if err := remote.WriteIndex(mustRef(f.web+":1.2"), idx, ropts...); err != nil {
		t.Fatal(err)
	}
	h, _ := idx.Digest()
	f.webIdx = digest.Digest(h.String())

	// The worker image: web's amd64 image plus one layer.
	extra, err := random.Layer(2000, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	worker, err := mutate.AppendLayers(amd64, extra)
	if err != nil {
		t.Fatal(err)
	}
	f.worker = host + "/acme/worker"
	if err := remote.Write(mustRef(f.worker+":2.0"), worker, ropts...); err != nil {
		t.Fatal(err)
	}
	h, _ = worker.Digest()
	f.workerD = digest.Digest(h.String())
	ls, _ := amd64.Layers()
	lh, _ := ls[0].Digest()
	f.shared = digest.Digest(lh.String())

	// The chart: a Helm OCI artifact.
	f.chart = host + "/charts/metrics"
	f.chartD = pushRaw(t, c, f.chart, "0.1.0+build.1", ocispec.MediaTypeImageManifest,
		staticBlob{helmConfigType, []byte(`{"name":"metrics","version":"0.1.0+build.1","apiVersion":"v2"}`)},
		staticBlob{helmChartType, randomBytes(t, 1500)})

	// The state: berth.yaml and a lock naming all three.
	entries := []lock.Entry{
		{App: "web", File: "apps/web/compose.yaml", Service: "web", Kind: lock.KindImage, Ref: f.web + ":1.2", Repository: f.web, Digest: f.webIdx.String()},
		{App: "web", File: "apps/web/compose.yaml", Service: "worker", Kind: lock.KindImage, Ref: f.worker + ":2.0", Repository: f.worker, Digest: f.workerD.String()},
		{App: "web", File: "apps/web/compose.yaml", Service: "again", Kind: lock.KindImage, Ref: f.worker + ":2.0", Repository: f.worker, Digest: f.workerD.String()},
		{App: "metrics", File: "berth.yaml", Kind: lock.KindChart, Ref: "oci://" + f.chart + ":0.1.0+build.1", Repository: f.chart, Digest: f.chartD.String()},
	}
	lockJSON, _ := json.Marshal(map[string]any{"apiVersion": "berth.dev/v1", "kind": "Lock", "entries": entries})
	layer := tarGz(t, map[string][]byte{
		"berth.yaml":      []byte("apiVersion: berth.dev/v1\nkind: DeviceState\napps: []\n"),
		lock.LockFile:     lockJSON,
		"apps/web/a.yaml": []byte("services: {}\n"),
	})
	f.state, _ = oci.ParseReference(host + "/fleet/line-3:v1")
	desc, err := c.Push(ctx, f.state, oci.Artifact{Layer: oci.Blob{
		Digest: digest.FromBytes(layer), Size: int64(len(layer)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer)), nil },
	}})
	if err != nil {
		t.Fatal(err)
	}
	f.stateDig = desc.Digest
	d, err := c.Name(f.state.WithDigest(desc.Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []cosign.Format{cosign.FormatBundle, cosign.FormatLegacy} {
		if err := cosign.Sign(ctx, d, f.key.sv, format, ropts...); err != nil {
			t.Fatalf("sign %s (%s): %v", d, format, err)
		}
	}
	return f
}

// staticBlob is a blob pushRaw uploads.
type staticBlob struct {
	mediaType string
	data      []byte
}

// pushRaw pushes a manifest of config and layers to repo:tag, tagging
// with '+' replaced by '_' as Helm does, and returns its digest.
func pushRaw(t testing.TB, c *oci.Client, repo, version, mediaType string, config staticBlob, layers ...staticBlob) digest.Digest {
	t.Helper()
	ctx := context.Background()
	r, err := name.NewRepository(repo, c.NameOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	desc := func(b staticBlob) ocispec.Descriptor {
		if err := remote.WriteLayer(r, static.NewLayer(b.data, types.MediaType(b.mediaType)), c.RemoteOptions(ctx)...); err != nil {
			t.Fatal(err)
		}
		return ocispec.Descriptor{MediaType: b.mediaType, Digest: digest.FromBytes(b.data), Size: int64(len(b.data))}
	}
	m := ocispec.Manifest{MediaType: mediaType, Config: desc(config)}
	m.SchemaVersion = 2
	for _, l := range layers {
		m.Layers = append(m.Layers, desc(l))
	}
	raw, _ := json.Marshal(m)
	tag := strings.ReplaceAll(version, "+", "_")
	if err := remote.Put(r.Tag(tag), rawManifest{raw: raw, mediaType: types.MediaType(mediaType)}, c.RemoteOptions(ctx)...); err != nil {
		t.Fatal(err)
	}
	return digest.FromBytes(raw)
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// tarGz packs files into a tar+gzip layer.
func tarGz(t testing.TB, files map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, n := range slices.Sorted(maps.Keys(files)) {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(files[n])
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// create makes a bundle of the fixture's state in a temp dir.
func (f *fixture) create(t testing.TB, platforms ...string) (*Bundle, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "site.tar")
	ctx := context.Background()
	state, err := (&deliver.Remote{Client: f.client}).Fetch(ctx, f.state, nil, true)
	if err != nil {
		t.Fatalf("fetch the state: %v", err)
	}
	b, err := Create(ctx, f.client, CreateOptions{State: state, Output: out, Platforms: platforms})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b, out
}
