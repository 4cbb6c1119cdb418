package materialize

import (
	"context"
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/source/oci"
)

// OCIFetcher is a Fetcher straight from the registries with a source/oci
// client: no mirrors, no signature check. The agent wires its own Fetcher
// to the delivery path (mirrors, trust policy); this one serves tools and
// tests.
type OCIFetcher struct {
	Client *oci.Client
	// MaxBlobSize caps a blob; default DefaultMaxArchiveSize.
	MaxBlobSize int64
}

var _ Fetcher = OCIFetcher{}

func ref(repo string) (oci.Reference, error) { return oci.ParseReference(repo) }

// Resolve resolves repo:tag.
func (f OCIFetcher) Resolve(ctx context.Context, repo, tag string) (ocispec.Descriptor, error) {
	r, err := ref(repo)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return f.Client.Resolve(ctx, r.WithTag(tag))
}

// Manifest fetches the manifest by digest.
func (f OCIFetcher) Manifest(ctx context.Context, repo string, desc ocispec.Descriptor) (*ocispec.Manifest, error) {
	r, err := ref(repo)
	if err != nil {
		return nil, err
	}
	_, m, err := f.Client.Manifest(ctx, r.WithDigest(desc.Digest.String()))
	return m, err
}

// Blob streams a blob, verified at EOF.
func (f OCIFetcher) Blob(ctx context.Context, repo string, desc ocispec.Descriptor) (io.ReadCloser, error) {
	r, err := ref(repo)
	if err != nil {
		return nil, err
	}
	maxSize := f.MaxBlobSize
	if maxSize <= 0 {
		maxSize = DefaultMaxArchiveSize
	}
	return f.Client.OpenBlob(ctx, r, desc, maxSize)
}
