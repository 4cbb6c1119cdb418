package deliver

import (
	"context"
	"errors"
	"fmt"

	"github.com/berth-dev/berth/internal/errdef"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/policy/rollout/statement"
	"github.com/berth-dev/berth/source/mirror"
	"github.com/berth-dev/berth/source/oci"
)

// Statements reads the signed rollout statements attached to ref (which
// must carry a digest), verified with p, from the first endpoint that
// answers: the registry mirrors that apply to the digest, in order, then
// the source, as for signatures. An endpoint that cannot be read passes to
// the next one; when none can, the error wraps statement.ErrRegistry: the
// statements are then unknown, never "none".
//
// Statements a registry serves are signed: a mirror cannot forge one, but
// a mirror that answers without the newest ones hides them until it syncs.
func (r *Remote) Statements(ctx context.Context, ref oci.Reference, p cosign.Policy, o statement.Options) (*statement.Result, mirror.Endpoint, error) {
	if ref.Digest == "" {
		return nil, mirror.Endpoint{}, fmt.Errorf("%w %s: statements are read by digest", oci.ErrInvalidReference, ref)
	}
	eps, refs, err := r.endpoints(ref)
	if err != nil {
		return nil, mirror.Endpoint{}, err
	}
	res, i, err := mirror.Try(ctx, eps, r.options("statements of "+ref.String()), func(ctx context.Context, ep mirror.Endpoint) (*statement.Result, error) {
		d, err := r.Client.Name(refs[ep.Ref])
		if err != nil {
			return nil, errdef.Refuse(err)
		}
		res, err := statement.Read(ctx, d, p, o, r.Client.PullOptions(ctx)...)
		if err != nil {
			r.Client.ForgetPulls()
		}
		return res, err
	})
	if err != nil {
		if !errors.Is(err, statement.ErrRegistry) && !errors.Is(err, errdef.ErrRefused) {
			err = fmt.Errorf("%w: %w", statement.ErrRegistry, err)
		}
		return nil, mirror.Endpoint{}, err
	}
	return res, eps[i], nil
}
