// Package deliver is berth's one delivery path. On the way in (the device,
// `berth pull`, bundles) it resolves a reference to one digest, verifies
// that digest's signature, then fetches and extracts it: the layer is
// streamed through a digest-verifying, size-capped reader straight into the
// extractor, and the folder appears with a rename only once every byte has
// been checked. On the way out (`berth push`) it pushes by digest, signs,
// and only then tags.
//
// The rule "nothing unverified is extracted" lives here and only here:
// Extract is a method of Verified, which only Verify makes (or Unverified,
// whose name is the explicit, loud opt-out a caller must choose).
//
// Every fetch goes through the failover of package mirror: the registry
// mirrors that apply, in order, then the source; content refused for what
// it is (errdef.ErrRefused) is never fetched elsewhere, anything else moves
// on to the next endpoint.
package deliver

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/berth-dev/berth/source/mirror"
	"github.com/berth-dev/berth/source/oci"
)

// Remote is where an artifact is delivered from: a registry (through its
// mirrors), or a bundle file served as a read-only registry.
type Remote struct {
	// Client reaches the registry and its mirrors.
	Client *oci.Client
	// Mirrors are the registry mirrors that apply; nil: none.
	Mirrors *mirror.Resolver
	// Timeout bounds each request on each endpoint (a tag list, a
	// manifest, the signatures); 0: only the caller's context. Layer
	// downloads are bounded by the caller's context.
	Timeout time.Duration
	// Log gets the failover's notes (an endpoint skipped, a later one
	// serving); nil: none.
	Log *slog.Logger
	// Local is set for a registry read from a local file (a bundle): it
	// holds everything it lists, so a signature that cannot be read there
	// is refused rather than tried again later.
	Local bool
}

// target is one endpoint with the reference to fetch there.
type target struct {
	ep  mirror.Endpoint
	ref oci.Reference
}

// endpoints lists where to fetch ref from, in order (see package mirror).
// A ref without a digest is a tag operation (with neither tag nor digest,
// the listing of the repository's tags); with a digest, a fetch by digest.
// The source's own reference is kept as it is for the source endpoint.
func (r *Remote) endpoints(ref oci.Reference) ([]mirror.Endpoint, map[string]oci.Reference, error) {
	if r.Mirrors == nil {
		ep := mirror.Endpoint{Ref: strings.TrimPrefix(ref.String(), oci.Scheme), ByTag: ref.Digest == ""}
		return []mirror.Endpoint{ep}, map[string]oci.Reference{ep.Ref: ref}, nil
	}
	key := strings.TrimPrefix(ref.String(), oci.Scheme)
	if ref.Tag == "" && ref.Digest == "" {
		key += ":latest" // a tag operation: listing the tags
	}
	eps, err := r.Mirrors.Resolve(key)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", ref, err)
	}
	refs := make(map[string]oci.Reference, len(eps))
	for _, ep := range eps {
		if ep.Mirror == "" {
			refs[ep.Ref] = ref
			continue
		}
		mr, err := oci.ParseReference(ep.Ref)
		if err != nil {
			return nil, nil, fmt.Errorf("mirror %s of %s: %w", ep.Mirror, ref, err)
		}
		if ref.Tag == "" {
			mr.Tag = ""
		}
		refs[ep.Ref] = mr
	}
	return eps, refs, nil
}

// Mirrored reports whether registry mirrors apply to the repository of
// ref.
func (r *Remote) Mirrored(ref oci.Reference) bool {
	if r.Mirrors == nil {
		return false
	}
	_, ok := r.Mirrors.Source(ref.Repo())
	return ok
}

// options are the failover options of one fetch.
func (r *Remote) options(what string) mirror.Options {
	return mirror.Options{What: what, Timeout: r.Timeout, Log: r.Log}
}
