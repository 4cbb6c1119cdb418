package oci

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// memBlobs is the in-memory registry's blob store, with a switch to serve
// corrupted bytes for chosen digests.
type memBlobs interface {
	registry.BlobHandler
	registry.BlobStatHandler
	registry.BlobPutHandler
}

type tamperBlobs struct {
	memBlobs
	mu      sync.Mutex
	corrupt map[string]bool
}

func (t *tamperBlobs) Get(ctx context.Context, repo string, h v1.Hash) (io.ReadCloser, error) {
	rc, err := t.memBlobs.Get(ctx, repo, h)
	t.mu.Lock()
	bad := t.corrupt[h.String()]
	t.mu.Unlock()
	if err != nil || !bad {
		return rc, err
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	b[len(b)/2] ^= 0xff
	return io.NopCloser(bytes.NewReader(b)), nil
}

func newRegistry(t *testing.T) (string, *tamperBlobs) {
	t.Helper()
	blobs := &tamperBlobs{memBlobs: registry.NewInMemoryBlobHandler().(memBlobs), corrupt: map[string]bool{}}
	srv := httptest.NewServer(registry.New(registry.WithBlobHandler(blobs), registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u.Host, blobs
}

func newClient(t *testing.T) *Client {
	t.Helper()
	c, err := NewClient(Options{Insecure: true, DockerConfig: t.TempDir() + "/config.json"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func blob(b []byte) Blob {
	return Blob{
		Digest: digest.FromBytes(b),
		Size:   int64(len(b)),
		Open:   func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
	}
}

func TestParseReference(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	for _, tc := range []struct {
		in      string
		want    Reference
		wantErr bool
	}{
		{in: "oci://r.example.com/fleet/line-3:v1", want: Reference{Registry: "r.example.com", Repository: "fleet/line-3", Tag: "v1"}},
		{in: "127.0.0.1:5000/fleet:canary", want: Reference{Registry: "127.0.0.1:5000", Repository: "fleet", Tag: "canary"}},
		{in: "oci://127.0.0.1:5000/fleet@" + d, want: Reference{Registry: "127.0.0.1:5000", Repository: "fleet", Digest: d}},
		{in: "oci://h/fleet:v1@" + d, want: Reference{Registry: "h", Repository: "fleet", Tag: "v1", Digest: d}},
		{in: "oci://h:5000/fleet", want: Reference{Registry: "h:5000", Repository: "fleet"}},
		{in: "https://h/fleet:v1", wantErr: true},
		{in: "oci://h/Fleet:v1", wantErr: true},
		{in: "oci://h/fleet@sha256:short", wantErr: true},
		{in: "oci://h/fleet:bad tag", wantErr: true},
	} {
		got, err := ParseReference(tc.in)
		if tc.wantErr {
			if !errors.Is(err, ErrInvalidReference) {
				t.Errorf("ParseReference(%q) err = %v, want ErrInvalidReference", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseReference(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestPushResolvePull(t *testing.T) {
	ctx := context.Background()
	host, blobs := newRegistry(t)
	c := newClient(t)
	layer := []byte("pretend this is tar+gzip")
	ref, _ := ParseReference("oci://" + host + "/fleet/line-3:v1.0.0")
	art := Artifact{Layer: blob(layer), Annotations: map[string]string{ocispec.AnnotationRevision: "main@sha1:abc"}}
	desc, err := c.Push(ctx, ref, art, "latest", "v1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	// Pushing again is idempotent and gives the same digest.
	again, err := c.Push(ctx, ref, art)
	if err != nil || again.Digest != desc.Digest {
		t.Fatalf("second push = %v, %v; want %v", again.Digest, err, desc.Digest)
	}
	for _, tag := range []string{"v1.0.0", "latest"} {
		got, err := c.Resolve(ctx, ref.WithTag(tag))
		if err != nil || got.Digest != desc.Digest {
			t.Fatalf("Resolve(%s) = %v, %v; want %v", tag, got.Digest, err, desc.Digest)
		}
	}
	_, m, err := c.Manifest(ctx, ref.WithDigest(desc.Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.MediaType != ConfigMediaType || m.Annotations[ocispec.AnnotationRevision] != "main@sha1:abc" {
		t.Fatalf("manifest = %+v", m)
	}
	l, err := SelectLayer(m, "")
	if err != nil || l.MediaType != ContentMediaType {
		t.Fatalf("SelectLayer = %+v, %v", l, err)
	}
	rc, err := c.OpenBlob(ctx, ref, l, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, layer) {
		t.Fatalf("blob = %q, %v", got, err)
	}

	// A registry serving other bytes under the digest is caught at EOF.
	blobs.corrupt[l.Digest.String()] = true
	rc, err = c.OpenBlob(ctx, ref, l, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, rc)
	rc.Close()
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("corrupted blob: err = %v, want ErrDigestMismatch", err)
	}
	// A blob over the cap is refused before any byte is fetched.
	if _, err := c.OpenBlob(ctx, ref, l, 4); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("capped blob: err = %v, want ErrTooLarge", err)
	}
}

func TestResolveNotFound(t *testing.T) {
	host, _ := newRegistry(t)
	ref, _ := ParseReference("oci://" + host + "/fleet:nope")
	_, err := newClient(t).Resolve(context.Background(), ref)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), ref.String()) {
		t.Fatalf("err = %v, want ErrNotFound naming %s", err, ref)
	}
}

func TestTagsAndTag(t *testing.T) {
	ctx := context.Background()
	host, _ := newRegistry(t)
	c := newClient(t)
	ref, _ := ParseReference("oci://" + host + "/fleet")
	desc, err := c.Push(ctx, ref.WithTag("canary"), Artifact{Layer: blob([]byte("x"))})
	if err != nil {
		t.Fatal(err)
	}
	sigTag := "sha256-" + desc.Digest.Encoded() + ".sig"
	if _, err := c.Push(ctx, ref.WithTag(sigTag), Artifact{Layer: blob([]byte("sig"))}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Push(ctx, ref.WithTag("sha256-"+desc.Digest.Encoded()), Artifact{Layer: blob([]byte("idx"))}); err != nil {
		t.Fatal(err)
	}
	got, err := c.Tag(ctx, ref.WithTag("canary"), "stable")
	if err != nil || got.Digest != desc.Digest {
		t.Fatalf("Tag = %v, %v", got.Digest, err)
	}
	tags, err := c.Tags(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(tags)
	if strings.Join(tags, ",") != "canary,stable" {
		t.Fatalf("Tags = %v, want canary,stable (signature tags left out)", tags)
	}
}

func TestSelectLayer(t *testing.T) {
	flux := ocispec.Descriptor{MediaType: ContentMediaType}
	gz := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip}
	custom := ocispec.Descriptor{MediaType: "application/vnd.acme.state.tar+gzip"}
	cfg := ocispec.Descriptor{MediaType: "application/json"}
	for i, tc := range []struct {
		layers []ocispec.Descriptor
		mt     string
		want   string
	}{
		{layers: []ocispec.Descriptor{gz, flux}, want: ContentMediaType},
		{layers: []ocispec.Descriptor{cfg, gz}, want: gz.MediaType},
		{layers: []ocispec.Descriptor{custom}, want: custom.MediaType},
		{layers: []ocispec.Descriptor{gz, custom}, mt: custom.MediaType, want: custom.MediaType},
		{layers: []ocispec.Descriptor{gz, custom}},
		{layers: []ocispec.Descriptor{cfg}},
		{layers: []ocispec.Descriptor{flux}, mt: "application/x-other"},
	} {
		got, err := SelectLayer(&ocispec.Manifest{Layers: tc.layers}, tc.mt)
		if tc.want == "" {
			if !errors.Is(err, ErrNoLayer) {
				t.Errorf("case %d: err = %v, want ErrNoLayer", i, err)
			}
			continue
		}
		if err != nil || got.MediaType != tc.want {
			t.Errorf("case %d: got %q, %v; want %q", i, got.MediaType, err, tc.want)
		}
	}
}

func TestIsSignatureTag(t *testing.T) {
	h := strings.Repeat("0", 64)
	for tag, want := range map[string]bool{
		"sha256-" + h + ".sig": true, "sha256-" + h + ".att": true, "sha256-" + h: true,
		"v1.0.0": false, "sha256-abc.sig": false, "main-" + h: false,
	} {
		if IsSignatureTag(tag) != want {
			t.Errorf("IsSignatureTag(%q) = %v", tag, !want)
		}
	}
}

func ExampleParseReference() {
	ref, _ := ParseReference("oci://registry.example.com/fleet/line-3:v1.4.0")
	fmt.Println(ref.Registry, ref.Repository, ref.Tag)
	// Output: registry.example.com fleet/line-3 v1.4.0
}
