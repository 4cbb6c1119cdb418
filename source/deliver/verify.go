package deliver

import (
	"context"
	"errors"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/errdef"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/source/mirror"
	"github.com/berth-dev/berth/source/oci"
)

// Verified is an artifact whose manifest was fetched by digest (and
// checked against it) and whose signature verified, or that the caller
// chose not to verify (Unverified). It is the only thing Extract reads.
type Verified struct {
	// Ref names the artifact by digest.
	Ref oci.Reference
	// Manifest is the artifact's manifest.
	Manifest *ocispec.Manifest
	// Signature is the signature that verified; nil for Unverified.
	Signature *cosign.Result
	// ManifestVia and SignatureVia are the endpoints that served the
	// manifest and the signature that verified.
	ManifestVia, SignatureVia mirror.Endpoint

	remote *Remote
	eps    []mirror.Endpoint // the manifest's endpoint first
	refs   map[string]oci.Reference
}

// Verify fetches the manifest of ref (which must carry a digest) from the
// first endpoint that has it, then checks that a signature the policy
// accepts names that exact digest. Signatures are read from the endpoint
// that served the manifest first, then from the others: a signature counts
// for the digest it names wherever it is stored, so one missing or wrong on
// one endpoint does not stop the search.
//
// When none verifies, the error wraps ErrUnverified (refused) if every
// endpoint answered, and is a transport error (tried again later) if one
// could not be read; a Local remote refuses either way.
func (r *Remote) Verify(ctx context.Context, ref oci.Reference, p cosign.Policy) (*Verified, error) {
	v, err := r.manifest(ctx, ref)
	if err != nil {
		return nil, err
	}
	if err := v.Check(ctx, p); err != nil {
		return nil, err
	}
	return v, nil
}

// Check is the second half of Verify, for a manifest Unverified read: it
// checks that a signature the policy accepts names the manifest's digest,
// and sets Signature and SignatureVia. Failures are classified as Verify's
// are.
func (v *Verified) Check(ctx context.Context, p cosign.Policy) error {
	res, i, err := v.remote.signature(ctx, v.Ref, p, v.eps, v.refs)
	if err != nil {
		return err
	}
	v.Signature, v.SignatureVia = res, v.eps[i]
	return nil
}

// Signature checks that a signature the policy accepts names the digest
// of ref, whatever ref's manifest is (an artifact, an image index, a
// chart), reading the signatures from the endpoints in order: what `berth
// verify` does. Nothing is fetched but the signatures. Failures are
// classified as Verify's are.
func (r *Remote) Signature(ctx context.Context, ref oci.Reference, p cosign.Policy) (*cosign.Result, mirror.Endpoint, error) {
	if ref.Digest == "" {
		return nil, mirror.Endpoint{}, fmt.Errorf("%w %s: verify a digest (resolve the tag first)", oci.ErrInvalidReference, ref)
	}
	eps, refs, err := r.endpoints(ref)
	if err != nil {
		return nil, mirror.Endpoint{}, err
	}
	res, i, err := r.signature(ctx, ref, p, eps, refs)
	if err != nil {
		return nil, mirror.Endpoint{}, err
	}
	return res, eps[i], nil
}

// signature is the failover over eps of the signature check.
func (r *Remote) signature(ctx context.Context, ref oci.Reference, p cosign.Policy, eps []mirror.Endpoint, refs map[string]oci.Reference) (*cosign.Result, int, error) {
	res, i, err := mirror.Try(ctx, eps, r.options("signatures of "+ref.Digest), func(ctx context.Context, ep mirror.Endpoint) (*cosign.Result, error) {
		d, err := r.Client.Name(refs[ep.Ref])
		if err != nil {
			return nil, errdef.Refuse(err)
		}
		res, err := cosign.VerifyPolicy(ctx, d, p, r.Client.PullOptions(ctx)...)
		if err != nil {
			r.Client.ForgetPulls()
		}
		return res, err
	})
	if err != nil {
		if ctx.Err() != nil || (errors.Is(err, cosign.ErrRegistry) && !r.Local) || errors.Is(err, errdef.ErrRefused) {
			return nil, i, fmt.Errorf("verify %s: %w", ref, err)
		}
		return nil, i, fmt.Errorf("verify %s: %w", ref, &unverifiedError{err})
	}
	return res, i, nil
}

// Unverified fetches the manifest of ref (which must carry a digest) like
// Verify, and checks no signature: for callers that were told, explicitly
// and loudly, to run without a trust policy, and for those that look at
// the manifest before they Check it.
func (r *Remote) Unverified(ctx context.Context, ref oci.Reference) (*Verified, error) {
	return r.manifest(ctx, ref)
}

// manifest fetches the manifest of ref from the first endpoint that serves
// it; its digest and size are checked by the client.
func (r *Remote) manifest(ctx context.Context, ref oci.Reference) (*Verified, error) {
	if ref.Digest == "" {
		return nil, fmt.Errorf("%w %s: pull by digest (resolve the tag first)", oci.ErrInvalidReference, ref)
	}
	eps, refs, err := r.endpoints(ref)
	if err != nil {
		return nil, err
	}
	m, i, err := mirror.Try(ctx, eps, r.options("manifest "+ref.String()), func(ctx context.Context, ep mirror.Endpoint) (*ocispec.Manifest, error) {
		_, m, err := r.Client.Manifest(ctx, refs[ep.Ref])
		return m, err
	})
	if err != nil {
		return nil, err
	}
	eps = mirror.StartAt(eps, i) // signatures and layer: where the manifest was found first
	return &Verified{Ref: ref, Manifest: m, ManifestVia: eps[0], remote: r, eps: eps, refs: refs}, nil
}

// unverifiedError is a verification failure: the message is cosign's, and
// it is ErrUnverified (refused content).
type unverifiedError struct{ err error }

func (e *unverifiedError) Error() string { return e.err.Error() }
func (e *unverifiedError) Unwrap() error { return e.err }
func (e *unverifiedError) Is(target error) bool {
	return target == ErrUnverified || target == errdef.ErrRefused
}
