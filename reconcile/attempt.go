package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/errdef"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/mirror"
	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/source/selector"
	"github.com/berth-dev/berth/state"
)

// attempt is one reconcile of a source, step by step: its steps fill in
// what they learn. Every step that fails before the switch leaves the
// applied revision untouched.
type attempt struct {
	a    *Agent
	name string
	s    *source
	req  request
	// rev is what is recorded of the attempt.
	rev store.Revision

	o        *origin
	ref      oci.Reference      // the artifact, by tag and digest
	applied  *store.Revision    // applied before this attempt; nil: none
	current  string             // what `current` points at
	verified *deliver.Verified  // the manifest, verified
	read     *deliver.Verified  // the manifest spread read, not verified yet
	dir      string             // the revision's folder in the store
	ds       *state.DeviceState // its berth.yaml; nil: none
	held     bool               // the digest is held against GC
	// wait says what holds the revision back when the attempt ends with
	// errWaiting.
	wait *store.Waiting
	// revertFrom is the aborted release the attempt takes the device back
	// from; "" otherwise.
	revertFrom string
}

// attempt runs the steps of one reconcile. It returns what is recorded of
// it and, when the revision is held back (errWaiting), why.
func (a *Agent) attempt(ctx context.Context, name string, s *source, req request) (store.Revision, *store.Waiting, error) {
	t := &attempt{a: a, name: name, s: s, req: req, rev: store.Revision{URL: s.cfg.URL, Time: a.now().UTC()}}
	defer t.close()
	if s.cfg.InsecureSkipVerify {
		a.log.Warn("SIGNATURE VERIFICATION IS OFF for this source (insecureSkipVerify): anything pushed to the repository will be applied", "source", name)
	}
	// The steps up to the switch have a deadline (reconcileTimeout); the
	// bundle's images and the appliers are bounded by their own timeouts,
	// so that an apply or a rollback is never cut short.
	dctx := ctx
	if d := s.cfg.ReconcileTimeout; d > 0 {
		var cancel context.CancelFunc
		dctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	for _, step := range []struct {
		run      func(context.Context) error
		deadline bool
	}{
		{t.origin, true},    // 0. where to fetch from: the registry and its mirrors, or the bundle file
		{t.resolve, true},   // 1. resolve to one digest
		{t.unchanged, true}, // 2. already applied (unless a signed abort stops it), or failed before and backing off: nothing to do
		{t.spread, true},    // 3. a release whose wave opens later: at the device's time in the spread
		{t.verify, true},    // 4. fetch the manifest of that exact digest and verify its signature
		{t.downgrade, true}, // 5. refuse downgrades
		{t.fetch, true},     // 6. pull by digest into the store, unless already there (inside the download window)
		{t.load, true},      // 7. read the desired state it carries
		{t.gate, true},      // 8. its rollout wave, signed statements, the apply window and inhibitors may hold it back
		{t.unload, false},   // 9. a bundle's images and charts: to the Docker Engine, to the local registry
		{t.apply, false},    // 10. switch it in, apply, and switch back if the appliers fail
	} {
		c := ctx
		if step.deadline {
			c = dctx
		}
		if err := step.run(c); err != nil {
			if step.deadline && errors.Is(dctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
				err = fmt.Errorf("%w (the reconcile's deadline, reconcileTimeout %s, passed: raise it for slow links or large artifacts)", err, s.cfg.ReconcileTimeout)
			}
			return t.rev, t.wait, err
		}
	}
	return t.rev, nil, nil
}

// close releases what the attempt holds.
func (t *attempt) close() {
	t.o.close()
	if t.held {
		t.a.hold(t.rev.Digest, -1)
	}
}

// via is what store.Via records for an endpoint of this attempt.
func (t *attempt) via(ep mirror.Endpoint) string {
	switch {
	case t.s.file != "":
		return store.ViaBundle
	case ep.Mirror == "":
		return store.ViaSource
	}
	return ep.Mirror
}

// origin opens where the attempt fetches from.
func (t *attempt) origin(ctx context.Context) error {
	o, err := t.a.origin(ctx, t.s)
	if err != nil {
		return err
	}
	t.o = o
	if t.s.file != "" || t.s.remote.Mirrored(t.s.ref) {
		t.rev.Via = &store.Via{}
	}
	return nil
}

// resolve turns the source's reference into one digest: an explicit digest
// (a rollback, a bundle's root, a configured digest) costs no request; a
// tag, a range or a filter goes through the delivery path.
func (t *attempt) resolve(ctx context.Context) error {
	s := t.s
	var res deliver.Resolved
	switch {
	case t.req.digest != "":
		res = deliver.Resolved{Ref: t.o.ref.WithDigest(t.req.digest)}
	case s.file != "":
		// A bundle tracks its root, by digest: nothing to resolve.
		res = deliver.Resolved{Ref: t.o.root, Tag: t.o.root.Tag}
	case s.cfg.Ref.Digest != "":
		res = deliver.Resolved{Ref: s.ref.WithDigest(s.cfg.Ref.Digest)}
	default:
		var err error
		if res, err = s.remote.Resolve(ctx, s.ref.WithTag(s.cfg.Ref.Tag), s.selector); err != nil {
			return err
		}
	}
	t.rev.Digest, t.rev.Tag, t.rev.Version = res.Ref.Digest, res.Tag, res.Version
	if res.Via != nil && t.rev.Via != nil {
		t.rev.Via.Tag = t.via(*res.Via)
	}
	t.ref = t.o.ref.WithTag(res.Tag).WithDigest(res.Ref.Digest)
	t.rev.URL = t.ref.String()
	return nil
}

// unchanged ends the attempt when the digest is already applied (with the
// same extensions), or failed before and its backoff has not expired. The
// release the device runs is looked at first while in its rollout: a
// signed abort turns the attempt into the return to the revision before
// it.
func (t *attempt) unchanged(ctx context.Context) error {
	a, digest := t.a, t.rev.Digest
	a.mu.Lock()
	ss := a.state.Source(t.name)
	if ss.Applied != nil {
		r := *ss.Applied
		t.applied = &r
	}
	failedDigest, retryAfter := ss.FailedDigest, ss.RetryAfter
	a.mu.Unlock()
	current, err := a.store.Current(t.name)
	if err != nil {
		return err
	}
	t.current = current
	t.rev.Extensions = a.cfg.Extensions
	if !t.req.rollback {
		if err := t.onRelease(ctx); err != nil || t.revertFrom != "" {
			return err
		}
		if err := t.settled(); err != nil {
			return err
		}
	}
	if !t.req.rollback && t.applied != nil && t.applied.Digest == digest && current == digest && slices.Equal(t.applied.Extensions, t.rev.Extensions) && a.store.Has(digest) {
		unchanged := *t.applied
		unchanged.Time, unchanged.Apps = t.rev.Time, nil
		if t.rev.Via != nil && t.rev.Via.Tag != "" {
			v := store.Via{Tag: t.rev.Via.Tag}
			unchanged.Via = &v
		}
		t.rev = unchanged
		return errUnchanged
	}
	if !t.req.force && digest == failedDigest && a.now().Before(retryAfter) {
		return fmt.Errorf("%w: %s failed at the last attempt; next try after %s or when a new digest appears", errBackingOff, digest, retryAfter.Format(time.RFC3339))
	}
	return nil
}

// verify fetches the manifest of the digest (checked against it) from the
// first endpoint that has it, and verifies the digest's signature: until
// then nothing of the manifest is acted on. A release held back that was
// verified and extracted at an earlier poll is not fetched again.
func (t *attempt) verify(ctx context.Context) error {
	if t.recall() {
		return nil
	}
	return t.verifyRemote(ctx)
}

// verifyRemote is verify from the registry (or the bundle).
func (t *attempt) verifyRemote(ctx context.Context) error {
	if err := t.a.open(ctx, t.o); err != nil {
		return err
	}
	r := t.o.remote
	var err error
	switch {
	case t.read != nil:
		if err = t.read.Check(ctx, t.s.policy); err == nil {
			t.verified = t.read
		}
	case t.s.cfg.InsecureSkipVerify:
		t.verified, err = r.Unverified(ctx, t.ref)
	default:
		t.verified, err = r.Verify(ctx, t.ref, t.s.policy)
	}
	if err != nil {
		if errors.Is(err, deliver.ErrUnverified) {
			t.a.metrics.VerificationFailed(t.name, verifyReason(err))
		}
		if refused(err) {
			return fail(store.OutcomeRefused, "%w", err)
		}
		return err
	}
	v := t.verified
	t.rev.Mirror = v.ManifestVia.Mirror
	if t.rev.Via != nil {
		t.rev.Via.Manifest = t.via(v.ManifestVia)
		if v.Signature != nil {
			t.rev.Via.Signatures = t.via(v.SignatureVia)
		}
	}
	t.rev.Annotations = v.Manifest.Annotations
	if c := v.Manifest.Annotations[ocispec.AnnotationCreated]; c != "" {
		if ct, err := time.Parse(time.RFC3339, c); err == nil {
			t.rev.Created = ct.UTC()
		}
	}
	return nil
}

func verifyReason(err error) string {
	for _, r := range []struct {
		err    error
		reason string
	}{
		{cosign.ErrNoSignature, "unsigned"},
		{cosign.ErrDigestMismatch, "digest_mismatch"},
		{cosign.ErrIdentityMismatch, "identity_mismatch"},
		{cosign.ErrKeyMismatch, "key_mismatch"},
	} {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "other"
}

// downgrade refuses a revision older than the applied one, or one that
// cannot be ordered against it, unless this is an explicit rollback or the
// configuration allows downgrades. A digest the configuration pins is an
// explicit choice: only a revision known to be older is refused.
func (t *attempt) downgrade(context.Context) error {
	if t.req.rollback || t.a.cfg.AllowDowngrade || t.applied == nil || t.applied.Digest == t.rev.Digest {
		return nil
	}
	err := downgrade(t.applied, t.rev, t.s.cfg.Ref.Digest != "")
	if err == nil {
		return nil
	}
	if v := t.rev.Via; v != nil && v.Tag != "" && v.Tag != store.ViaSource {
		return fail(store.OutcomeRefused, "%w (the tag was resolved by mirror %s: it may serve a stale tag)", err, v.Tag)
	}
	return err
}

// downgrade refuses a revision older than the applied one: a lower version
// in semver mode, or an older signed creation time in any mode. A revision
// that neither orders against the applied one (no signed created time on
// one of them, and no versions to compare) is refused too, since it may be
// older: unless pinned (the configuration names its digest).
func downgrade(applied *store.Revision, rev store.Revision, pinned bool) error {
	ordered := false
	if applied.Version != "" && rev.Version != "" {
		c, err := selector.CompareVersions(rev.Version, applied.Version)
		if err == nil && c < 0 {
			return fail(store.OutcomeRefused, "downgrade refused: %s (%s) is older than the applied %s (%s); use `berth rollback` or set allowDowngrade", rev.Version, rev.Digest, applied.Version, applied.Digest)
		}
		ordered = err == nil
	}
	if !rev.Created.IsZero() && !applied.Created.IsZero() {
		if rev.Created.Before(applied.Created) {
			return fail(store.OutcomeRefused, "downgrade refused: %s was created %s, before the applied %s (%s); use `berth rollback` or set allowDowngrade",
				rev.Digest, rev.Created.Format(time.RFC3339), applied.Digest, applied.Created.Format(time.RFC3339))
		}
		ordered = true
	}
	if !ordered && !pinned {
		missing := rev.Digest
		if rev.Created.IsZero() == applied.Created.IsZero() {
			missing = "neither " + rev.Digest + " nor the applied " + applied.Digest
		} else if applied.Created.IsZero() {
			missing = "the applied " + applied.Digest
		}
		return fail(store.OutcomeRefused, "downgrade refused: %s cannot be ordered against the applied %s: %s has no signed org.opencontainers.image.created annotation and no semantic version to compare, so it may be older; publish with `berth push` (which signs the commit time), track a semver range, pin the digest, use `berth rollback --to %s`, or set allowDowngrade",
			rev.Digest, applied.Digest, missing, rev.Digest)
	}
	return nil
}

// fetch extracts the verified revision into the store, unless it is there.
// Another source's garbage collection must not remove it until it is
// recorded.
func (t *attempt) fetch(ctx context.Context) error {
	a, digest := t.a, t.rev.Digest
	a.hold(digest, 1)
	t.held = true
	dir, err := a.store.RevisionDir(digest)
	if err != nil {
		return fail(store.OutcomeRefused, "%w", err)
	}
	t.dir = dir
	if a.store.Has(digest) {
		return nil
	}
	if err := a.store.Discard(digest); err != nil { // a folder a crash left incomplete
		return err
	}
	if err := t.downloadWindow(); err != nil {
		return err
	}
	if t.verified == nil { // recalled, then collected since
		if err := t.verifyRemote(ctx); err != nil {
			return err
		}
	}
	lim := t.s.cfg.Limits
	pctx, cancel := context.WithTimeout(ctx, t.s.cfg.Timeout)
	defer cancel()
	eo := deliver.ExtractOptions{
		LayerMediaType: t.s.cfg.LayerSelector.MediaType,
		Limits:         archive.Limits{MaxSize: lim.MaxSize, MaxFiles: lim.MaxFiles},
	}
	a.downloadOptions(t.s, t.o, &eo)
	res, err := t.verified.Extract(pctx, dir, eo)
	if err != nil {
		if refused(err) {
			return fail(store.OutcomeRefused, "%w", err)
		}
		return err
	}
	if err := a.store.Complete(digest, res.Files, res.Size); err != nil {
		return err
	}
	if t.rev.Via != nil {
		t.rev.Via.Layer = t.via(res.Via)
	}
	return nil
}

// load reads the desired state the revision carries and checks that it
// defines the extensions the device enables.
func (t *attempt) load(context.Context) error {
	ds, err := loadState(t.dir)
	if err != nil {
		return fail(store.OutcomeRefused, "%s: %w", t.ref, err)
	}
	if err := t.a.checkExtensions(ds); err != nil {
		return fail(store.OutcomeRefused, "%s: %w", t.ref, err)
	}
	t.ds = ds
	return nil
}

// unload hands a bundle's images and charts to the device, within
// bundles.timeout.
func (t *attempt) unload(ctx context.Context) error {
	if t.o.bundle == nil {
		return nil
	}
	if d := t.a.cfg.Bundles.Timeout; d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	return t.a.unload(ctx, t.name, t.o)
}

// apply switches the revision in and hands it to the appliers; when they
// fail, `current` goes back to what it was.
func (t *attempt) apply(ctx context.Context) error {
	a, name, digest := t.a, t.name, t.rev.Digest
	if err := a.store.Switch(name, digest); err != nil {
		return err
	}
	next := state.Revision{Source: name, Digest: digest, Dir: t.dir, State: t.ds, Extensions: a.cfg.Extensions}
	var prev *state.Revision
	if t.current != "" && t.current != digest && a.store.Has(t.current) {
		pdir, _ := a.store.RevisionDir(t.current)
		pds, _ := loadState(pdir)
		prev = &state.Revision{Source: name, Digest: t.current, Dir: pdir, State: pds, Extensions: a.cfg.Extensions}
	}
	apps, err := a.apply(ctx, next, prev)
	t.rev.Apps = apps
	if err == nil {
		return nil
	}
	var serr error
	if prev != nil {
		serr = a.store.Switch(name, prev.Digest)
	} else if t.current == "" {
		serr = a.store.Clear(name) // nothing was applied before
	}
	if serr != nil {
		err = errors.Join(err, fmt.Errorf("switch back: %w", serr))
	}
	return fail(store.OutcomeFailed, "apply %s: %w", t.ref, err)
}

// refused reports whether err is content refused for what it is (see
// errdef): no endpoint can serve other bytes for the same digest.
func refused(err error) bool { return errors.Is(err, errdef.ErrRefused) }

// loadState reads berth.yaml from an extracted revision; nil when the
// artifact has none (a plain Flux artifact).
func loadState(dir string) (*state.DeviceState, error) {
	ds, err := state.Load(os.DirFS(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return ds, err
}

func (a *Agent) checkExtensions(ds *state.DeviceState) error {
	for _, e := range a.cfg.Extensions {
		if ds == nil || !slices.ContainsFunc(ds.Extensions, func(x state.App) bool { return x.Name == e }) {
			return fmt.Errorf("the agent enables extension %q but this revision's berth.yaml does not define it: fix the agent config or the desired state", e)
		}
	}
	return nil
}
