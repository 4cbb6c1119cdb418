package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
)

// Media types of the artifacts berth writes: the ones Flux writes and reads
// (fluxcd/pkg/oci CanonicalConfigMediaType and CanonicalContentMediaType).
const (
	ConfigMediaType  = "application/vnd.cncf.flux.config.v1+json"
	ContentMediaType = "application/vnd.cncf.flux.content.v1.tar+gzip"
)

// Blob is content to upload: its descriptor fields and a way to read it.
type Blob struct {
	Digest digest.Digest
	Size   int64
	Open   func() (io.ReadCloser, error)
}

// Artifact is a Flux-compatible OCI artifact: an empty JSON config of the
// Flux config media type, one tar+gzip content layer and annotations.
type Artifact struct {
	Layer       Blob
	Annotations map[string]string
}

// manifest renders the artifact's image manifest deterministically, so the
// same content and annotations always give the same manifest digest.
func (a Artifact) manifest() (ocispec.Descriptor, []byte, ocispec.Descriptor, []byte, error) {
	config := []byte("{}")
	configDesc := ocispec.Descriptor{
		MediaType: ConfigMediaType,
		Digest:    digest.FromBytes(config),
		Size:      int64(len(config)),
	}
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    configDesc,
		Layers: []ocispec.Descriptor{{
			MediaType: ContentMediaType,
			Digest:    a.Layer.Digest,
			Size:      a.Layer.Size,
		}},
		Annotations: maps.Clone(a.Annotations),
	}
	raw, err := json.Marshal(m) // encoding/json sorts map keys
	if err != nil {
		return ocispec.Descriptor{}, nil, ocispec.Descriptor{}, nil, fmt.Errorf("encode manifest: %w", err)
	}
	return content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, raw), raw, configDesc, config, nil
}

// Push uploads the artifact to ref's repository, skipping blobs the registry
// already has, and tags the manifest with ref's tag and every extra tag. It
// returns the manifest descriptor.
func (c *Client) Push(ctx context.Context, ref Reference, a Artifact, tags ...string) (ocispec.Descriptor, error) {
	repo, err := c.repository(ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	mdesc, mraw, cdesc, craw, err := a.manifest()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	layer := ocispec.Descriptor{MediaType: ContentMediaType, Digest: a.Layer.Digest, Size: a.Layer.Size}
	if err := pushIfMissing(ctx, repo, layer, a.Layer.Open); err != nil {
		return ocispec.Descriptor{}, classify(fmt.Errorf("push layer %s to %s: %w", layer.Digest, ref.Repo(), err))
	}
	openConfig := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(craw)), nil }
	if err := pushIfMissing(ctx, repo, cdesc, openConfig); err != nil {
		return ocispec.Descriptor{}, classify(fmt.Errorf("push config to %s: %w", ref.Repo(), err))
	}
	all := slices.Compact(slices.Sorted(slices.Values(append([]string{ref.Tag}, tags...))))
	all = slices.DeleteFunc(all, func(t string) bool { return t == "" })
	if len(all) == 0 {
		if err := repo.Manifests().Push(ctx, mdesc, bytes.NewReader(mraw)); err != nil {
			return ocispec.Descriptor{}, classify(fmt.Errorf("push manifest to %s: %w", ref.Repo(), err))
		}
		return mdesc, nil
	}
	for _, t := range all {
		if err := repo.PushReference(ctx, mdesc, bytes.NewReader(mraw), t); err != nil {
			return ocispec.Descriptor{}, classify(fmt.Errorf("push manifest to %s: %w", ref.WithTag(t), err))
		}
	}
	return mdesc, nil
}

type blobPusher interface {
	Exists(ctx context.Context, target ocispec.Descriptor) (bool, error)
	Push(ctx context.Context, expected ocispec.Descriptor, content io.Reader) error
}

func pushIfMissing(ctx context.Context, repo blobPusher, desc ocispec.Descriptor, open func() (io.ReadCloser, error)) error {
	ok, err := repo.Exists(ctx, desc)
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	return repo.Push(ctx, desc, rc)
}
