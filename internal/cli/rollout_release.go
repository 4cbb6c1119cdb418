package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/policy/rollout"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/state"
)

// release is a release read through the delivery path for the rollout
// commands: its digest, created time and rollout plan.
type release struct {
	remote *deliver.Remote
	ref    oci.Reference
	// policy is the trust policy of --key, nil when the release was read
	// without verifying its signature.
	policy  *cosign.Policy
	created time.Time
	// plan is the release's rollout plan, nil when it has none.
	plan *state.Rollout
}

// loadRelease resolves arg once to a digest, verifies its signature with
// the --key files (or, without keys, reads it unverified and says so),
// extracts it to a temporary folder under the size limits and reads its
// berth.yaml and signed created time.
func (g *globals) loadRelease(cmd *cobra.Command, arg string, keys []string, lf limitFlags) (*release, error) {
	r, ref, err := g.resolveRef(cmd, arg)
	if err != nil {
		return nil, err
	}
	rel := &release{remote: r, ref: ref}
	ctx, cancel := g.step(cmd.Context())
	defer cancel()
	var v *deliver.Verified
	if len(keys) > 0 {
		if rel.policy, err = keyPolicy(keys); err != nil {
			return nil, err
		}
		v, err = r.Verify(ctx, ref, *rel.policy)
	} else {
		g.log.Warn("signature not verified: give --key to verify the release (its rollout plan) and read its signed statements", "ref", ref.String())
		v, err = r.Unverified(ctx, ref)
	}
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "berth-release-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "release")
	if _, err := v.Extract(ctx, dir, deliver.ExtractOptions{Limits: lf.limits()}); err != nil {
		return nil, err
	}
	st, err := state.Load(os.DirFS(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s has no %s: it is no berth release", ref, state.FileName)
	}
	if err != nil {
		return nil, err
	}
	rel.plan = st.Rollout
	if rel.created, err = rollout.Created(v.Manifest.Annotations); err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	return rel, nil
}
