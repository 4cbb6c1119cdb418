package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
)

// MaxManifestSize caps manifests read from a registry (4 MiB, as
// containerd does).
const MaxManifestSize = 4 << 20

// Manifest fetches and decodes the image manifest ref names (which must
// carry a digest), verifying its digest and size.
func (c *Client) Manifest(ctx context.Context, ref Reference) (ocispec.Descriptor, *ocispec.Manifest, error) {
	if ref.Digest == "" {
		return ocispec.Descriptor{}, nil, fmt.Errorf("%w %s: fetch a manifest by digest", ErrInvalidReference, ref)
	}
	repo, err := c.repository(ref)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	desc, rc, err := repo.FetchReference(ctx, ref.Digest)
	if err != nil {
		return ocispec.Descriptor{}, nil, classify(fmt.Errorf("fetch manifest %s: %w", ref, err))
	}
	defer rc.Close()
	if desc.Size > MaxManifestSize {
		return ocispec.Descriptor{}, nil, fmt.Errorf("%w: manifest %s is %d bytes (cap %d)", ErrTooLarge, ref, desc.Size, MaxManifestSize)
	}
	raw, err := content.ReadAll(rc, desc) // bounded by desc.Size and digest-checked
	if err != nil {
		return ocispec.Descriptor{}, nil, fmt.Errorf("%w: manifest %s: %v", ErrDigestMismatch, ref, err)
	}
	m, err := decodeManifest(raw, ref)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	return desc, m, nil
}

// decodeManifest decodes the (verified) bytes of the manifest ref names,
// refusing anything but an OCI image manifest, such as an index.
func decodeManifest(raw []byte, ref Reference) (*ocispec.Manifest, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("decode manifest %s: %w", ref, err)
	}
	if m.MediaType != "" && m.MediaType != ocispec.MediaTypeImageManifest {
		return nil, fmt.Errorf("%w: %s is a %s, not an OCI image manifest", ErrNoLayer, ref, m.MediaType)
	}
	return &m, nil
}

// SelectLayer picks the layer to extract: the one of mediaType when given;
// else the Flux content layer; else the only tar+gzip layer (what
// `oras push` of a folder makes).
func SelectLayer(m *ocispec.Manifest, mediaType string) (ocispec.Descriptor, error) {
	want := mediaType
	if want == "" {
		want = ContentMediaType
	}
	for _, l := range m.Layers {
		if l.MediaType == want {
			return l, nil
		}
	}
	if mediaType != "" {
		return ocispec.Descriptor{}, fmt.Errorf("%w: no layer of media type %s", ErrNoLayer, mediaType)
	}
	var found []ocispec.Descriptor
	for _, l := range m.Layers {
		if strings.HasSuffix(l.MediaType, "tar+gzip") || l.MediaType == dockerLayerGzip {
			found = append(found, l)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return ocispec.Descriptor{}, fmt.Errorf("%w: no Flux content layer and no tar+gzip layer", ErrNoLayer)
	default:
		return ocispec.Descriptor{}, fmt.Errorf("%w: %d tar+gzip layers and no Flux content layer: pick one by media type", ErrNoLayer, len(found))
	}
}

const dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"

// OpenBlob streams the blob desc names from ref's repository. The returned
// reader refuses more than desc.Size bytes and, at EOF, fails with
// ErrDigestMismatch unless the bytes match desc.Digest; nothing is buffered.
// A blob larger than maxSize is refused before it is fetched.
func (c *Client) OpenBlob(ctx context.Context, ref Reference, desc ocispec.Descriptor, maxSize int64) (io.ReadCloser, error) {
	if maxSize > 0 && desc.Size > maxSize {
		return nil, fmt.Errorf("%w: blob %s is %d bytes (cap %d)", ErrTooLarge, desc.Digest, desc.Size, maxSize)
	}
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%w: blob %q: %v", ErrDigestMismatch, desc.Digest, err)
	}
	repo, err := c.repository(ref)
	if err != nil {
		return nil, err
	}
	rc, err := repo.Blobs().Fetch(ctx, desc)
	if err != nil {
		return nil, classify(fmt.Errorf("fetch blob %s from %s: %w", desc.Digest, ref.Repo(), err))
	}
	return &verifyingReader{rc: rc, vr: content.NewVerifyReader(rc, desc), desc: desc}, nil
}

// verifyingReader turns content.VerifyReader's explicit Verify into an error
// at EOF, so that any consumer reading to the end gets the check for free.
type verifyingReader struct {
	rc   io.Closer
	vr   *content.VerifyReader
	desc ocispec.Descriptor
}

func (r *verifyingReader) Read(p []byte) (int, error) {
	n, err := r.vr.Read(p)
	switch {
	case err == io.EOF:
		if verr := r.vr.Verify(); verr != nil {
			return n, fmt.Errorf("%w: blob %s: %v", ErrDigestMismatch, r.desc.Digest, verr)
		}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return n, fmt.Errorf("%w: blob %s: shorter than its %d bytes", ErrDigestMismatch, r.desc.Digest, r.desc.Size)
	}
	return n, err
}

func (r *verifyingReader) Close() error { return r.rc.Close() }
