package deliver

import (
	"context"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/source/mirror"
	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/source/selector"
)

// Resolved is a reference pinned to one digest.
type Resolved struct {
	// Ref carries the digest (and the tag it was resolved from, if any).
	Ref oci.Reference
	// Tag is the tag resolved; "" when ref named a digest.
	Tag string
	// Version is the semantic version of Tag, when a selector chose it by
	// version.
	Version string
	// Via is the endpoint that resolved the tag; nil when nothing was
	// resolved (ref named a digest).
	Via *mirror.Endpoint
}

// Resolve pins ref to one digest: a digest costs no request, a tag one HEAD,
// a selector (semver range or filter; nil: none) a tag listing and one
// HEAD. Tags are listed and resolved only where tags may be (see package
// mirror); the endpoint that listed the tags resolves the chosen one first.
func (r *Remote) Resolve(ctx context.Context, ref oci.Reference, sel *selector.Selector) (Resolved, error) {
	if ref.Digest != "" {
		return Resolved{Ref: ref, Tag: ref.Tag}, nil
	}
	tag, version := ref.Tag, ""
	start := 0
	if sel != nil {
		repo := ref.WithTag("")
		eps, refs, err := r.endpoints(repo)
		if err != nil {
			return Resolved{}, err
		}
		var tags []string
		tags, start, err = mirror.Try(ctx, eps, r.options("tag list of "+ref.Repo()), func(ctx context.Context, ep mirror.Endpoint) ([]string, error) {
			return r.Client.Tags(ctx, refs[ep.Ref])
		})
		if err != nil {
			return Resolved{}, err
		}
		s, err := sel.Select(tags)
		if err != nil {
			return Resolved{}, fmt.Errorf("%s: %w", ref, err)
		}
		tag, version = s.Tag, s.Version
	}
	tagged := ref.WithTag(tag)
	eps, refs, err := r.endpoints(tagged)
	if err != nil {
		return Resolved{Tag: tag, Version: version}, err
	}
	eps = mirror.StartAt(eps, start) // the tag lists and resolutions have the same endpoints
	desc, i, err := mirror.Try(ctx, eps, r.options("tag "+tagged.String()), func(ctx context.Context, ep mirror.Endpoint) (ocispec.Descriptor, error) {
		return r.Client.Resolve(ctx, refs[ep.Ref])
	})
	if err != nil {
		return Resolved{Tag: tag, Version: version}, err
	}
	via := eps[i]
	return Resolved{Ref: tagged.WithDigest(desc.Digest.String()), Tag: tag, Version: version, Via: &via}, nil
}
