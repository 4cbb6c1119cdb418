package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/metrics"
	"github.com/berth-dev/berth/reconcile/store"
)

// request shapes one reconcile.
type request struct {
	force         bool   // ignore the failed-digest backoff
	digest        string // reconcile to this digest instead of resolving
	rollback      bool   // explicit rollback: downgrades allowed, nothing holds it back
	ignoreWindows bool   // switch and apply (and download) outside the update windows
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

// errWaiting means the revision is verified and prefetched but held back
// (its rollout wave, a signed pause, an update window, an inhibitor): the
// attempt's wait says why.
var errWaiting = errors.New("waiting")

// errAborted means a signed abort stops the release: it is not adopted,
// and the revision's Message says so.
var errAborted = errors.New("aborted")

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
	rev, wait, err := a.attempt(ctx, name, s, req)
	outcome := store.OutcomeApplied
	if req.rollback || rev.Outcome == store.OutcomeRolledBack {
		outcome = store.OutcomeRolledBack
	}
	var se *stepError
	switch {
	case errors.Is(err, errUnchanged):
		outcome, err = store.OutcomeUnchanged, nil
	case errors.Is(err, errWaiting):
		outcome, err = store.OutcomeWaiting, nil
	case errors.Is(err, errAborted):
		outcome, err = store.OutcomeAborted, nil
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
		rev.Error = err.Error() + capHint(err)
		if s.file != "" && !strings.Contains(rev.Error, s.file) {
			rev.Error = "bundle " + s.file + ": " + rev.Error
		}
	}
	switch outcome {
	case store.OutcomeWaiting, store.OutcomeAborted, store.OutcomeError:
	default:
		s.prefetched, s.spread = nil, nil // switched in, or refused
	}
	a.record(name, s, rev, wait)
	a.metrics.ObserveReconcile(name, string(outcome), time.Since(start))

	log := a.log.With("source", name, "digest", rev.Digest, "outcome", outcome, "duration", time.Since(start).Round(time.Millisecond))
	if rev.Via != nil {
		log = log.With(viaAttr(rev.Via))
	}
	switch outcome {
	case store.OutcomeUnchanged:
		log.Debug("reconciled")
	case store.OutcomeApplied, store.OutcomeRolledBack:
		log.Info("reconciled", "tag", rev.Tag, "version", rev.Version, "revision", rev.Annotations[ocispec.AnnotationRevision], "message", rev.Message)
	case store.OutcomeRefused:
		log.Warn("reconcile refused: the content itself was refused; this digest is not tried again before its backoff", "error", rev.Error)
	case store.OutcomeError:
		log.Warn("reconcile failed: the registry could not be reached or the transfer broke; retrying", "error", rev.Error)
	case store.OutcomeWaiting, store.OutcomeAborted:
		log.Info("held back", "message", rev.Message)
	default:
		log.Warn("reconcile failed", "error", rev.Error)
	}
	return api.ReconcileResult{Source: name, Outcome: string(outcome), Digest: rev.Digest, Error: rev.Error, Message: rev.Message, Via: rev.Via, Waiting: wait}
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
// steady polls, and polls of a revision still held back for the same
// reason, do not write to the device's disk) and collects old revisions.
func (a *Agent) record(name string, s *source, rev store.Revision, wait *store.Waiting) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ss := a.state.Source(name)
	now := a.now().UTC()
	quiet := ss.Failures == 0 && ss.Last != nil && ss.Last.Outcome == rev.Outcome && !s.dirty
	switch rev.Outcome {
	case store.OutcomeUnchanged:
	case store.OutcomeWaiting, store.OutcomeAborted:
		quiet = quiet && ss.Last.Digest == rev.Digest && ss.Last.Message == rev.Message
	default:
		quiet = false
	}
	s.dirty = false
	switch rev.Outcome {
	case store.OutcomeWaiting:
		ss.Waiting = wait
		a.metrics.SetWaiting(name, rev.Digest, waitMetric(wait.Reason), wait.Until)
	case store.OutcomeError:
	default:
		ss.Waiting = nil
		a.metrics.ClearWaiting(name)
	}
	switch rev.Outcome {
	case store.OutcomeApplied, store.OutcomeRolledBack:
		if rel := ss.Release(rev.Digest); rel != nil && rev.Outcome == store.OutcomeApplied && ss.Applied != nil && ss.Applied.Digest != rev.Digest {
			rel.Previous = ss.Applied.Digest // where a signed abort of this release takes the device back to
		}
		r := rev
		ss.Applied = &r
		ss.Record(rev)
		ss.Failures, ss.FailedDigest, ss.RetryAfter, ss.LastSuccess = 0, "", time.Time{}, now
		a.metrics.SetLastSuccess(name, now)
		a.metrics.SetApplied(name, rev.Digest, rev.Version, rev.Annotations[ocispec.AnnotationRevision])
	case store.OutcomeUnchanged, store.OutcomeWaiting, store.OutcomeAborted:
		ss.Failures, ss.FailedDigest, ss.RetryAfter, ss.LastSuccess = 0, "", time.Time{}, now
		a.metrics.SetLastSuccess(name, now)
	case store.OutcomeFailed, store.OutcomeRefused:
		ss.Record(rev)
		ss.Failures++
		ss.FailedDigest, ss.RetryAfter = rev.Digest, now.Add(backoff(ss.Failures, s.cfg.Interval))
	default:
		ss.Failures++
	}
	if mo, ok := lastOutcome[rev.Outcome]; ok && rev.Digest != "" {
		a.metrics.SetOutcome(name, rev.Digest, mo)
	}
	r := rev
	ss.Last = &r
	if quiet {
		return
	}
	// Old revisions are collected only once state.json, which no longer
	// needs them, is durable: a crash in between leaves a revision too
	// many, never a state naming a revision that is gone.
	if err := store.WriteState(a.cfg.StateDir, a.state); err != nil {
		a.log.Error("could not record the outcome", "source", name, "error", err)
		return
	}
	if rev.Outcome == store.OutcomeApplied || rev.Outcome == store.OutcomeRolledBack {
		if removed, err := a.store.GC(a.state, a.cfg.KeepRevisions, slices.Collect(maps.Keys(a.inUse))...); err != nil {
			a.log.Warn("garbage collection of old revisions failed", "error", err)
		} else if len(removed) > 0 {
			a.log.Info("removed old revisions", "digests", removed)
		}
	}
}

// lastOutcome maps the outcomes of a release to berth_source_last_outcome,
// which fleet status and the circuit breaker read. Unchanged keeps the
// series as it is; a transport error is no outcome of a release.
var lastOutcome = map[store.Outcome]metrics.Outcome{
	store.OutcomeApplied:    metrics.OutcomeApplied,
	store.OutcomeFailed:     metrics.OutcomeFailed,
	store.OutcomeRefused:    metrics.OutcomeRefused,
	store.OutcomeRolledBack: metrics.OutcomeRolledBack,
	store.OutcomeWaiting:    metrics.OutcomeWaiting,
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
