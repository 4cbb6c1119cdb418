package materialize

import (
	"context"
	"errors"

	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/oci"
)

// Fetcher reaches the components' OCI repositories. Content comes only
// through what Open returns, a *deliver.Verified, whose Extract is the one
// place berth extracts anything: nothing unverified is extracted when a
// trust policy is set. repo is HOST[:PORT]/PATH (a component's repository
// without oci://).
type Fetcher interface {
	// Resolve pins repo:tag to one manifest digest.
	Resolve(ctx context.Context, repo, tag string) (oci.Reference, error)
	// Open fetches the manifest of ref (which carries a digest), checked
	// against that digest, and verifies the digest's signature under the
	// fetcher's trust policy.
	Open(ctx context.Context, ref oci.Reference) (*deliver.Verified, error)
}

// Registry is the Fetcher of the agent and of tools: the delivery path of
// package deliver, through the registry mirrors of Remote, every digest
// verified with Policy (a signature copied along with the content by
// `berth mirror` or a bundle still verifies, since it names the digest),
// or, with Insecure, not verified at all (the explicit, loud opt-out).
type Registry struct {
	Remote   *deliver.Remote
	Policy   *cosign.Policy
	Insecure bool
}

var _ Fetcher = Registry{}

// errNoPolicy is a caller's mistake: a Registry needs a policy or the
// explicit opt-out.
var errNoPolicy = errors.New("no trust policy for the components: set margo.verify, or margo.insecureSkipVerify: true to run unverified components")

// Resolve resolves repo:tag once (where tags may be resolved: the source,
// or a mirror that allows tags).
func (f Registry) Resolve(ctx context.Context, repo, tag string) (oci.Reference, error) {
	r, err := oci.ParseReference(repo)
	if err != nil {
		return oci.Reference{}, err
	}
	res, err := f.Remote.Resolve(ctx, r.WithTag(tag), nil)
	if err != nil {
		return oci.Reference{}, err
	}
	return res.Ref, nil
}

// Open fetches the manifest of ref and verifies its signature with the
// policy, or only fetches it with Insecure.
func (f Registry) Open(ctx context.Context, ref oci.Reference) (*deliver.Verified, error) {
	switch {
	case f.Policy != nil:
		return f.Remote.Verify(ctx, ref, *f.Policy)
	case f.Insecure:
		return f.Remote.Unverified(ctx, ref)
	}
	return nil, errNoPolicy
}
