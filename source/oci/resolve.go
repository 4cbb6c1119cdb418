package oci

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	orasErrdef "oras.land/oras-go/v2/errdef"
)

// Resolve returns the descriptor of the manifest ref names, with one HEAD
// request for a tag. When ref carries a digest, that digest is resolved.
func (c *Client) Resolve(ctx context.Context, ref Reference) (ocispec.Descriptor, error) {
	if ref.ref() == "" {
		return ocispec.Descriptor{}, fmt.Errorf("%w %s: give a tag or a digest", ErrInvalidReference, ref)
	}
	repo, err := c.repository(ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc, err := repo.Resolve(ctx, ref.ref())
	if err != nil {
		return ocispec.Descriptor{}, classify(fmt.Errorf("resolve %s: %w", ref, err))
	}
	return desc, nil
}

// signatureTag matches tags that hold signatures, attestations, SBOMs and
// referrers fallback indexes rather than artifacts.
var signatureTag = regexp.MustCompile(`^sha256-[0-9a-f]{64}(\.(sig|att|sbom))?$`)

// IsSignatureTag reports whether tag holds signature material rather than an
// artifact (cosign's sha256-<hex>.sig and the referrers fallback tag).
func IsSignatureTag(tag string) bool { return signatureTag.MatchString(tag) }

// Tags lists the repository's tags, following pagination, leaving out
// signature tags. At most Options.MaxTags tags (signature tags included)
// and Options.MaxTagPages pages are read: beyond, ErrTooManyTags.
func (c *Client) Tags(ctx context.Context, ref Reference) ([]string, error) {
	repo, err := c.repository(ref)
	if err != nil {
		return nil, err
	}
	maxTags, maxPages := c.tagLimits()
	repo.TagListMaxPages = maxPages
	var out []string
	seen := 0
	err = repo.Tags(ctx, "", func(tags []string) error {
		if seen += len(tags); seen > maxTags {
			return errTagCap
		}
		for _, t := range tags {
			if !IsSignatureTag(t) {
				out = append(out, t)
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, errTagCap):
		return nil, fmt.Errorf("%w: list tags of %s: more than %d tags, the cap", ErrTooManyTags, ref.Repo(), maxTags)
	case errors.Is(err, orasErrdef.ErrTooManyPages):
		return nil, fmt.Errorf("%w: list tags of %s: more than %d pages, the cap", ErrTooManyTags, ref.Repo(), maxPages)
	case err != nil:
		return nil, classify(fmt.Errorf("list tags of %s: %w", ref.Repo(), err))
	}
	return out, nil
}

// Tag points newTag at the manifest ref names, without downloading any blob.
func (c *Client) Tag(ctx context.Context, ref Reference, newTag string) (ocispec.Descriptor, error) {
	if _, err := ParseReference(ref.Repo() + ":" + newTag); err != nil {
		return ocispec.Descriptor{}, err
	}
	repo, err := c.repository(ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc, rc, err := repo.FetchReference(ctx, ref.ref())
	if err != nil {
		return ocispec.Descriptor{}, classify(fmt.Errorf("fetch %s: %w", ref, err))
	}
	defer rc.Close()
	if desc.Size > MaxManifestSize {
		return ocispec.Descriptor{}, fmt.Errorf("%w: manifest %s is %d bytes (cap %d)", ErrTooLarge, ref, desc.Size, MaxManifestSize)
	}
	if err := repo.PushReference(ctx, desc, rc, newTag); err != nil {
		return ocispec.Descriptor{}, classify(fmt.Errorf("tag %s as %s: %w", ref, newTag, err))
	}
	return desc, nil
}
