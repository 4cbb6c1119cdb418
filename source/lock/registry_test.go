package lock

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testRegistry is go-containerregistry's registry, in process, standing
// for registry.local:5000 and docker.io.
type testRegistry struct {
	t    *testing.T
	host string
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return &testRegistry{t: t, host: strings.TrimPrefix(srv.URL, "http://")}
}

// tag returns the reference of repo:tag in the test registry.
func (r *testRegistry) tag(ref string) name.Tag {
	r.t.Helper()
	tag, err := name.NewTag(r.host+"/"+ref, name.Insecure)
	if err != nil {
		r.t.Fatal(err)
	}
	return tag
}

// push pushes img as ref ("repo:tag") and returns its digest.
func (r *testRegistry) push(ref string, img v1.Image) string {
	r.t.Helper()
	if err := remote.Write(r.tag(ref), img); err != nil {
		r.t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		r.t.Fatal(err)
	}
	return d.String()
}

// pushIndex pushes idx as ref and returns its digest.
func (r *testRegistry) pushIndex(ref string, idx v1.ImageIndex) string {
	r.t.Helper()
	if err := remote.WriteIndex(r.tag(ref), idx); err != nil {
		r.t.Fatal(err)
	}
	d, err := idx.Digest()
	if err != nil {
		r.t.Fatal(err)
	}
	return d.String()
}

// pushRandom pushes a random image as ref and returns its digest.
func (r *testRegistry) pushRandom(ref string) string {
	r.t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		r.t.Fatal(err)
	}
	return r.push(ref, img)
}

// pushRandomIndex pushes a random two-platform index as ref and returns
// the digest of the index.
func (r *testRegistry) pushRandomIndex(ref string) string {
	r.t.Helper()
	idx, err := random.Index(256, 1, 2)
	if err != nil {
		r.t.Fatal(err)
	}
	return r.pushIndex(ref, idx)
}

// staticImage is an image whose digest only depends on content.
func staticImage(t *testing.T, content string, configType, layerType types.MediaType) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, static.NewLayer([]byte(content), layerType))
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	return mutate.ConfigMediaType(img, configType)
}

// staticIndex is a two-platform index whose digest only depends on content.
func staticIndex(t *testing.T, content string) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, arch := range []string{"amd64", "arm64"} {
		adds = append(adds, mutate.IndexAddendum{
			Add:        staticImage(t, content+"/"+arch, types.OCIConfigJSON, types.OCILayer),
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
	}
	return mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
}

const (
	helmConfig = types.MediaType("application/vnd.cncf.helm.config.v1+json")
	helmLayer  = types.MediaType("application/vnd.cncf.helm.chart.content.v1.tar+gzip")
)

// registryResolver resolves with go-containerregistry against the test
// registry, which stands for the registries named in hosts.
type registryResolver struct {
	reg   *testRegistry
	hosts map[string]bool

	mu   sync.Mutex
	seen []string
}

func (r *registryResolver) Resolve(ctx context.Context, ref string) (string, error) {
	r.mu.Lock()
	r.seen = append(r.seen, ref)
	r.mu.Unlock()
	if host, rest, ok := strings.Cut(ref, "/"); ok && r.hosts[host] {
		ref = r.reg.host + "/" + rest
	}
	tag, err := name.NewTag(ref, name.Insecure, name.StrictValidation)
	if err != nil {
		return "", err
	}
	desc, err := remote.Head(tag, remote.WithContext(ctx))
	if err != nil {
		return "", err
	}
	return desc.Digest.String(), nil
}
