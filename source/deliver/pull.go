package deliver

import (
	"context"

	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/source/oci"
)

// PullOptions control Pull.
type PullOptions struct {
	ExtractOptions
	// Policy is whose signatures are accepted. Required unless Insecure.
	Policy *cosign.Policy
	// Insecure extracts without checking any signature: the caller's
	// explicit, loud opt-out.
	Insecure bool
}

// Pull is the whole way in: resolve ref once to a digest, verify that
// digest, then extract it into dir (which must not exist).
func (r *Remote) Pull(ctx context.Context, ref oci.Reference, dir string, o PullOptions) (*Result, error) {
	v, err := r.Fetch(ctx, ref, o.Policy, o.Insecure)
	if err != nil {
		return nil, err
	}
	return v.Extract(ctx, dir, o.ExtractOptions)
}

// Fetch resolves ref once to a digest and verifies it with the policy (or,
// with insecure, only fetches its manifest): what Pull does before it
// extracts, for callers that read the artifact another way (a bundle).
func (r *Remote) Fetch(ctx context.Context, ref oci.Reference, p *cosign.Policy, insecure bool) (*Verified, error) {
	res, err := r.Resolve(ctx, ref, nil)
	if err != nil {
		return nil, err
	}
	if insecure {
		return r.Unverified(ctx, res.Ref)
	}
	if p == nil {
		return nil, errNoPolicy
	}
	return r.Verify(ctx, res.Ref, *p)
}
