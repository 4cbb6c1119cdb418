package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/errdef"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/fetch"
	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/source/selector"
	"github.com/berth-dev/berth/state"
)

// request shapes one reconcile.
type request struct {
	force    bool   // ignore the failed-digest backoff
	digest   string // reconcile to this digest instead of resolving
	rollback bool   // explicit rollback: downgrades allowed
}

// stepError carries the outcome a failed step maps to.
type stepError struct {
	outcome store.Outcome
	err     error
}

func (e *stepError) Error() string { return e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

func fail(o store.Outcome, format string, args ...any) error {
	return &stepError{outcome: o, err: fmt.Errorf(format, args...)}
}

// errUnchanged means the resolved digest is already applied.
var errUnchanged = errors.New("unchanged")

// errBackingOff means the digest failed before and its backoff has not
// expired: nothing was attempted.
var errBackingOff = errors.New("backing off")

// reconcile runs one reconcile of a source and records its outcome.
func (a *Agent) reconcile(ctx context.Context, name string, s *source, req request) api.ReconcileResult {
	s.run.Lock()
	defer s.run.Unlock()
	s.mu.Lock()
	s.reconciling = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.reconciling, s.attempted = false, true
		s.mu.Unlock()
	}()

	start := time.Now()
	rev, err := a.attempt(ctx, name, s, req)
	outcome := store.OutcomeApplied
	if req.rollback {
		outcome = store.OutcomeRolledBack
	}
	var se *stepError
	switch {
	case errors.Is(err, errUnchanged):
		outcome, err = store.OutcomeUnchanged, nil
	case errors.Is(err, errBackingOff):
		a.log.Debug("digest failed before, backing off", "source", name, "digest", rev.Digest)
		return api.ReconcileResult{Source: name, Outcome: "backoff", Digest: rev.Digest, Error: err.Error()}
	case errors.As(err, &se):
		outcome = se.outcome
	case err != nil:
		outcome = store.OutcomeError
	}
	rev.Outcome = outcome
	if rev.Via != nil && *rev.Via == (store.Via{}) {
		rev.Via = nil // nothing was fetched
	}
	if err != nil {
		rev.Error = err.Error()
		if s.file != "" && !strings.Contains(rev.Error, s.file) {
			rev.Error = "bundle " + s.file + ": " + rev.Error
		}
	}
	a.record(name, s, rev)
	a.metrics.ObserveReconcile(name, string(outcome), time.Since(start))

	log := a.log.With("source", name, "digest", rev.Digest, "outcome", outcome, "duration", time.Since(start).Round(time.Millisecond))
	if rev.Via != nil {
		log = log.With(viaAttr(rev.Via))
	}
	switch outcome {
	case store.OutcomeUnchanged:
		log.Debug("reconciled")
	case store.OutcomeApplied, store.OutcomeRolledBack:
		log.Info("reconciled", "tag", rev.Tag, "version", rev.Version, "revision", rev.Annotations[ocispec.AnnotationRevision])
	default:
		log.Warn("reconcile failed", "error", rev.Error)
	}
	return api.ReconcileResult{Source: name, Outcome: string(outcome), Digest: rev.Digest, Error: rev.Error, Via: rev.Via}
}

// viaAttr is the log attribute of where the fetches were served from.
func viaAttr(v *store.Via) slog.Attr {
	var attrs []any
	for _, f := range []struct{ k, v string }{{"tag", v.Tag}, {"manifest", v.Manifest}, {"signatures", v.Signatures}, {"layer", v.Layer}} {
		if f.v != "" {
			attrs = append(attrs, f.k, f.v)
		}
	}
	return slog.Group("via", attrs...)
}

// record stores the outcome in state.json (only when something changed:
// steady polls do not write to the device's disk) and collects old
// revisions.
func (a *Agent) record(name string, s *source, rev store.Revision) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ss := a.state.Source(name)
	now := time.Now().UTC()
	quiet := rev.Outcome == store.OutcomeUnchanged && ss.Failures == 0 && ss.Last != nil && ss.Last.Outcome == store.OutcomeUnchanged
	switch rev.Outcome {
	case store.OutcomeApplied, store.OutcomeRolledBack:
		r := rev
		ss.Applied = &r
		ss.Record(rev)
		ss.Failures, ss.FailedDigest, ss.RetryAfter, ss.LastSuccess = 0, "", time.Time{}, now
		a.metrics.SetLastSuccess(name, now)
		a.metrics.SetApplied(name, rev.Digest, rev.Version, rev.Annotations[ocispec.AnnotationRevision])
	case store.OutcomeUnchanged:
		ss.Failures, ss.FailedDigest, ss.RetryAfter, ss.LastSuccess = 0, "", time.Time{}, now
		a.metrics.SetLastSuccess(name, now)
	case store.OutcomeFailed, store.OutcomeRefused:
		ss.Record(rev)
		ss.Failures++
		ss.FailedDigest, ss.RetryAfter = rev.Digest, now.Add(backoff(ss.Failures, s.cfg.Interval))
	default:
		ss.Failures++
	}
	r := rev
	ss.Last = &r
	if quiet {
		return
	}
	if rev.Outcome == store.OutcomeApplied || rev.Outcome == store.OutcomeRolledBack {
		if removed, err := a.store.GC(a.state, a.cfg.KeepRevisions, slices.Collect(maps.Keys(a.inUse))...); err != nil {
			a.log.Warn("garbage collection of old revisions failed", "error", err)
		} else if len(removed) > 0 {
			a.log.Info("removed old revisions", "digests", removed)
		}
	}
	if err := store.WriteState(a.cfg.StateDir, a.state); err != nil {
		a.log.Error("could not record the outcome", "source", name, "error", err)
	}
}

// attempt is one reconcile, step by step. Every step that fails before the
// switch leaves the applied revision untouched.
func (a *Agent) attempt(ctx context.Context, name string, s *source, req request) (store.Revision, error) {
	rev := store.Revision{URL: s.cfg.URL, Time: time.Now().UTC()}
	if s.cfg.InsecureSkipVerify {
		a.log.Warn("SIGNATURE VERIFICATION IS OFF for this source (insecureSkipVerify): anything pushed to the repository will be applied", "source", name)
	}

	// 0. Where to fetch from: the registry (and its mirrors), or the
	// bundle file.
	o, err := a.origin(ctx, s)
	if err != nil {
		return rev, err
	}
	defer o.close()
	if s.mirrored() || s.file != "" {
		rev.Via = &store.Via{}
	}

	// 1. Resolve to one digest.
	digest, tag, version, err := a.resolve(ctx, name, o, req, rev.Via)
	if err != nil {
		return rev, err
	}
	rev.Digest, rev.Tag, rev.Version = digest, tag, version
	ref := o.ref.WithTag(tag).WithDigest(digest)
	rev.URL = ref.String()

	a.mu.Lock()
	ss := a.state.Source(name)
	var applied *store.Revision
	if ss.Applied != nil {
		r := *ss.Applied
		applied = &r
	}
	failedDigest, retryAfter := ss.FailedDigest, ss.RetryAfter
	a.mu.Unlock()
	current, err := a.store.Current(name)
	if err != nil {
		return rev, err
	}

	// 2. Already applied: nothing to do.
	rev.Extensions = a.cfg.Extensions
	if !req.rollback && applied != nil && applied.Digest == digest && current == digest && slices.Equal(applied.Extensions, rev.Extensions) {
		unchanged := *applied
		unchanged.Time, unchanged.Apps = rev.Time, nil
		if rev.Via != nil && rev.Via.Tag != "" {
			v := store.Via{Tag: rev.Via.Tag}
			unchanged.Via = &v
		}
		return unchanged, errUnchanged
	}
	if !req.force && digest == failedDigest && time.Now().Before(retryAfter) {
		return rev, fmt.Errorf("%w: %s failed at the last attempt; next try after %s or when a new digest appears", errBackingOff, digest, retryAfter.Format(time.RFC3339))
	}

	// 3. Fetch the manifest of that exact digest (digest-checked) from the
	// first endpoint that has it.
	if err := a.open(ctx, o); err != nil {
		return rev, err
	}
	eps, err := o.endpoints(ref)
	if err != nil {
		return rev, err
	}
	var m *ocispec.Manifest
	served, err := a.firstServed(ctx, name, "manifest "+ref.String(), eps, func(ep endpoint) error {
		mctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		defer cancel()
		_, mm, err := o.client.Manifest(mctx, ep.ref)
		m = mm
		return err
	}, refused)
	if err != nil {
		if refused(err) {
			return rev, fail(store.OutcomeRefused, "%w", err)
		}
		return rev, err
	}
	// The signatures and the layer are looked for where the manifest was
	// found first.
	eps = startAt(eps, served)
	rev.Mirror = eps[0].mirror
	if rev.Via != nil {
		rev.Via.Manifest = eps[0].via()
	}

	// 4. Verify that exact digest: until then nothing of the manifest is
	// acted on.
	if !s.cfg.InsecureSkipVerify {
		i, err := a.verify(ctx, name, s, o.client, ref, eps)
		if err != nil {
			return rev, err
		}
		if rev.Via != nil {
			rev.Via.Signatures = eps[i].via()
		}
	}

	// 5. Refuse downgrades.
	rev.Annotations = m.Annotations
	if c := m.Annotations[ocispec.AnnotationCreated]; c != "" {
		if t, err := time.Parse(time.RFC3339, c); err == nil {
			rev.Created = t.UTC()
		}
	}
	if !req.rollback && !a.cfg.AllowDowngrade && applied != nil {
		if err := downgrade(applied, rev); err != nil {
			if v := rev.Via; v != nil && v.Tag != "" && v.Tag != store.ViaSource {
				return rev, fail(store.OutcomeRefused, "%w (the tag was resolved by mirror %s: it may serve a stale tag)", err, v.Tag)
			}
			return rev, err
		}
	}

	// 6. Pull by digest into the store, unless already there. Another
	// source's garbage collection must not remove it until it is recorded.
	a.hold(digest, 1)
	defer a.hold(digest, -1)

	dir, err := a.store.RevisionDir(digest)
	if err != nil {
		return rev, fail(store.OutcomeRefused, "%w", err)
	}
	if !a.store.Has(digest) {
		fo := fetch.Options{
			LayerMediaType: s.cfg.LayerSelector.MediaType,
			Limits:         archive.Limits{MaxSize: s.cfg.Limits.MaxSize, MaxFiles: s.cfg.Limits.MaxFiles},
		}
		if len(eps) > 1 {
			for _, ep := range eps {
				fo.Endpoints = append(fo.Endpoints, ep.ref)
			}
		}
		pctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		res, err := fetch.Extract(pctx, o.client, eps[0].ref, m, dir, fo)
		cancel()
		if err != nil {
			if refused(err) {
				return rev, fail(store.OutcomeRefused, "%w", err)
			}
			return rev, err
		}
		if rev.Via != nil {
			rev.Via.Layer = eps[res.Endpoint].via()
		}
	}

	// 7. Read the desired state it carries.
	ds, err := loadState(dir)
	if err != nil {
		return rev, fail(store.OutcomeRefused, "%s: %w", ref, err)
	}
	if err := a.checkExtensions(ds); err != nil {
		return rev, fail(store.OutcomeRefused, "%s: %w", ref, err)
	}

	// 8. A bundle's images and charts: to the Docker Engine, to the local
	// registry.
	if o.bundle != nil {
		if err := a.unload(ctx, name, o); err != nil {
			return rev, err
		}
	}

	// 9. Switch it in, apply, and switch back if the appliers fail.
	if err := a.store.Switch(name, digest); err != nil {
		return rev, err
	}
	next := state.Revision{Source: name, Digest: digest, Dir: dir, State: ds, Extensions: a.cfg.Extensions}
	var prev *state.Revision
	if current != "" && current != digest && a.store.Has(current) {
		pdir, _ := a.store.RevisionDir(current)
		pds, _ := loadState(pdir)
		prev = &state.Revision{Source: name, Digest: current, Dir: pdir, State: pds, Extensions: a.cfg.Extensions}
	}
	apps, err := a.apply(ctx, next, prev)
	rev.Apps = apps
	if err != nil {
		var serr error
		if prev != nil {
			serr = a.store.Switch(name, prev.Digest)
		} else if current == "" {
			serr = a.store.Clear(name) // nothing was applied before
		}
		if serr != nil {
			err = errors.Join(err, fmt.Errorf("switch back: %w", serr))
		}
		return rev, fail(store.OutcomeFailed, "apply %s: %w", ref, err)
	}
	return rev, nil
}

// resolve turns the source's reference into one digest: a configured
// digest costs no request, a tag one HEAD, a range or filter a tag listing
// and one HEAD. Tags are listed and resolved where tags may be (see
// endpoints); the endpoint that listed the tags resolves the chosen one
// first. via, when not nil, records that endpoint.
func (a *Agent) resolve(ctx context.Context, name string, o *origin, req request, via *store.Via) (digest, tag, version string, err error) {
	s := o.s
	if req.digest != "" {
		return req.digest, "", "", nil
	}
	if s.file != "" {
		// A bundle tracks its root, by digest: nothing to resolve.
		return o.root.Digest, o.root.Tag, "", nil
	}
	if s.cfg.Ref.Digest != "" {
		return s.cfg.Ref.Digest, "", "", nil
	}
	tag = s.cfg.Ref.Tag
	start := 0
	if s.selector != nil {
		eps, err := s.endpoints(s.ref.WithTag(""))
		if err != nil {
			return "", "", "", err
		}
		var tags []string
		start, err = a.firstServed(ctx, name, "tag list of "+s.ref.Repo(), eps, func(ep endpoint) error {
			rctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
			defer cancel()
			var err error
			tags, err = s.client.Tags(rctx, ep.ref)
			return err
		}, nil)
		if err != nil {
			return "", "", "", err
		}
		sel, err := s.selector.Select(tags)
		if err != nil {
			return "", "", "", fmt.Errorf("%s: %w", s.ref, err)
		}
		tag, version = sel.Tag, sel.Version
	}
	eps, err := s.endpoints(s.ref.WithTag(tag))
	if err != nil {
		return "", tag, version, err
	}
	eps = startAt(eps, start) // the tag lists and resolutions have the same endpoints
	var desc ocispec.Descriptor
	i, err := a.firstServed(ctx, name, "tag "+s.ref.WithTag(tag).String(), eps, func(ep endpoint) error {
		rctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		defer cancel()
		var err error
		desc, err = s.client.Resolve(rctx, ep.ref)
		return err
	}, nil)
	if err != nil {
		return "", tag, version, err
	}
	if via != nil {
		via.Tag = eps[i].via()
	}
	return desc.Digest.String(), tag, version, nil
}

// verify checks the signatures of ref's digest, read from the endpoints in
// order (see endpoints), and returns the index of the endpoint whose
// signature verified. A signature counts for the digest it names wherever
// it is stored, so a signature missing or wrong on one endpoint does not
// stop the search. When none verifies, the reconcile is refused if every
// endpoint answered, and fails as an error (tried again) if one could not
// be read.
func (a *Agent) verify(ctx context.Context, name string, s *source, client *oci.Client, ref oci.Reference, eps []endpoint) (int, error) {
	var errs []error
	registry := false
	for i, ep := range eps {
		d, err := client.Name(ep.ref)
		if err != nil {
			return i, fail(store.OutcomeRefused, "%w", err)
		}
		vctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		_, err = cosign.VerifyPolicy(vctx, d, s.policy, client.RemoteOptions(vctx)...)
		cancel()
		if err == nil {
			if i > 0 {
				a.log.Info("signature found on a later registry", "source", name, "endpoint", ep.String())
			}
			return i, nil
		}
		if len(eps) == 1 && ep.mirror == "" {
			if errors.Is(err, cosign.ErrRegistry) && ep.bundle == "" {
				return i, fmt.Errorf("verify %s: %w", ref, err)
			}
			a.metrics.VerificationFailed(name, verifyReason(err))
			return i, fail(store.OutcomeRefused, "verify %s: %w", ref, err)
		}
		if ctx.Err() != nil {
			return i, fmt.Errorf("verify %s: %w", ref, err)
		}
		registry = registry || errors.Is(err, cosign.ErrRegistry)
		errs = append(errs, fmt.Errorf("[%s] %w", ep, err))
		if i < len(eps)-1 {
			a.log.Warn("no signature verified, trying the next registry", "source", name, "endpoint", ep.String(), "error", err)
		}
	}
	err := &triedError{what: "signatures of " + ref.Digest, errs: errs, noFallback: !hasSource(eps)}
	if registry {
		return -1, fmt.Errorf("verify %s: %w", ref, err)
	}
	a.metrics.VerificationFailed(name, verifyReason(errs[0]))
	return -1, fail(store.OutcomeRefused, "verify %s: %w", ref, err)
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

// downgrade refuses a revision older than the applied one: a lower version
// in semver mode, or an older signed creation time in any mode.
func downgrade(applied *store.Revision, rev store.Revision) error {
	if applied.Version != "" && rev.Version != "" {
		if c, err := selector.CompareVersions(rev.Version, applied.Version); err == nil && c < 0 {
			return fail(store.OutcomeRefused, "downgrade refused: %s (%s) is older than the applied %s (%s); use `berth rollback` or set allowDowngrade", rev.Version, rev.Digest, applied.Version, applied.Digest)
		}
	}
	if !rev.Created.IsZero() && !applied.Created.IsZero() && rev.Created.Before(applied.Created) {
		return fail(store.OutcomeRefused, "downgrade refused: %s was created %s, before the applied %s (%s); use `berth rollback` or set allowDowngrade",
			rev.Digest, rev.Created.Format(time.RFC3339), applied.Digest, applied.Created.Format(time.RFC3339))
	}
	return nil
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

// apply hands the revision to every applier and gathers their results.
func (a *Agent) apply(ctx context.Context, rev state.Revision, prev *state.Revision) ([]state.AppStatus, error) {
	var apps []state.AppStatus
	var errs []error
	for _, ap := range a.appliers {
		st, err := ap.Apply(ctx, rev, prev)
		apps = append(apps, st...)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ap.Kind(), err))
		}
	}
	apps = append(apps, a.unhandled(rev)...)
	return apps, errors.Join(errs...)
}

// unhandled reports the apps of rev that no configured applier handles, so
// that status shows them rather than pretending they run.
func (a *Agent) unhandled(rev state.Revision) []state.AppStatus {
	if rev.State == nil {
		return nil
	}
	kinds := map[string]bool{}
	for _, ap := range a.appliers {
		kinds[ap.Kind()] = true
	}
	var out []state.AppStatus
	add := func(app state.App) {
		kind := "compose"
		if app.Helm != nil {
			kind = "helm"
		}
		if !kinds[kind] {
			out = append(out, state.AppStatus{Name: app.Name, Kind: kind, Outcome: "skipped",
				Message: fmt.Sprintf("not applied: the agent configuration has no apply.%s block", kind)})
		}
	}
	for _, app := range rev.State.Apps {
		add(app)
	}
	for _, ext := range rev.State.Extensions {
		if slices.Contains(rev.Extensions, ext.Name) {
			add(ext)
		}
	}
	return out
}

// hold marks digest as in use (n=1) or releases it (n=-1).
func (a *Agent) hold(digest string, n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inUse[digest] += n
	if a.inUse[digest] <= 0 {
		delete(a.inUse, digest)
	}
}
