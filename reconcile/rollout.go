package reconcile

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/policy/inhibit"
	"github.com/berth-dev/berth/policy/rollout"
	"github.com/berth-dev/berth/policy/rollout/statement"
	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/config"
	"github.com/berth-dev/berth/reconcile/metrics"
	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/state"
)

// Staged rollouts on the device. A new revision is verified and extracted
// into the store as soon as it is seen (inside the download window), then
// held back until its rollout plan lets this device adopt it (the device's
// wave is open, no signed pause or abort stops it), an apply window is
// open and no app inhibits it (gate). While a release is in its rollout,
// every poll reads its signed statements (pause, resume, abort); what they
// said last is kept in state.json per release digest (store.Release), so
// the verdict survives the end of the look-ups and restarts. A device on
// a release that a signed abort stops goes back to the revision it ran
// before (onRelease): the abort, signed and naming the digest, authorizes
// that downgrade. Drift correction and the rollback of a failed apply
// are never held back.

// prefetched is what verify learnt of a release held back, so that the
// polls that find it again while it waits do not fetch and verify its
// manifest and signature again: it is verified and extracted in the store.
type prefetched struct {
	digest      string
	mirror      string
	annotations map[string]string
	created     time.Time
	via         store.Via
}

// remember keeps what verify learnt of the revision for the next polls.
func (t *attempt) remember() {
	p := &prefetched{digest: t.rev.Digest, mirror: t.rev.Mirror, annotations: t.rev.Annotations, created: t.rev.Created}
	if t.rev.Via != nil {
		p.via = *t.rev.Via
	}
	t.s.prefetched = p
}

// recall fills in what verify learnt of a prefetched revision; false when
// the revision is not the one prefetched (or not in the store any more).
// Bundle sources always verify: their content is loaded when applied.
func (t *attempt) recall() bool {
	p := t.s.prefetched
	if p == nil || p.digest != t.rev.Digest || t.s.file != "" || t.req.rollback || !t.a.store.Has(p.digest) {
		return false
	}
	t.rev.Mirror, t.rev.Annotations, t.rev.Created = p.mirror, p.annotations, p.created
	if v := t.rev.Via; v != nil {
		v.Manifest, v.Signatures = p.via.Manifest, p.via.Signatures
	}
	return true
}

// gate decides whether the verified, extracted revision is switched in
// now: its rollout plan (the device's wave and the signed statements), the
// apply window and the inhibitors may hold it back. An explicit rollback
// is never held back; the revert of an aborted release only by
// inhibitors.
func (t *attempt) gate(ctx context.Context) error {
	switch {
	case t.revertFrom != "":
		return t.inhibited()
	case t.req.rollback:
		return nil
	}
	if err := t.plan(ctx); err != nil {
		return err
	}
	if err := t.applyWindow(); err != nil {
		return err
	}
	return t.inhibited()
}

// plan applies the revision's rollout plan: a revision without one is
// adopted as before.
func (t *attempt) plan(ctx context.Context) error {
	a, digest := t.a, t.rev.Digest
	var plan *state.Rollout
	if t.ds != nil {
		plan = t.ds.Rollout
	}
	if plan == nil {
		a.metrics.SetWave(t.name, digest, "")
		return nil
	}
	created, err := rollout.Created(t.rev.Annotations)
	if err != nil {
		return fail(store.OutcomeRefused, "%s: %w", t.ref, err)
	}
	now := a.now()
	rec := a.release(t.name, digest)
	if rec == nil {
		rec = &store.Release{Digest: digest, FirstSeen: now}
	}
	rec.Created, rec.End = created, rollout.End(plan, created)
	if rollout.Lookups(plan, created, rec.FirstSeen, now, t.s.cfg.Interval) {
		if err := t.statements(ctx, rec); err != nil {
			a.putRelease(t.name, *rec)
			return err
		}
	}
	dec, err := rollout.Decide(rollout.Input{
		Plan: plan, Created: created, Device: a.device, Repository: t.repository(),
		Action: rollout.Action(rec.Action), OnRelease: t.applied != nil && t.applied.Digest == digest, Now: now,
	})
	if err != nil {
		return fail(store.OutcomeRefused, "%s: %w", t.ref, err)
	}
	rec.Wave, rec.Opens, rec.Verdict = dec.Placement.Name, dec.Opens, string(dec.Verdict)
	a.putRelease(t.name, *rec)
	a.metrics.SetWave(t.name, digest, dec.Placement.Name)
	switch dec.Verdict {
	case rollout.Adopt, rollout.Keep:
		return nil
	case rollout.WaitWave:
		return t.waiting(store.WaitWave, dec.Reason, dec.Opens)
	case rollout.WaitClock:
		return t.waiting(store.WaitClock, dec.Reason, time.Time{})
	case rollout.Paused:
		return t.waiting(store.WaitPaused, dec.Reason+signedBy(rec.Statement), time.Time{})
	}
	t.rev.Message = dec.Reason + signedBy(rec.Statement)
	return errAborted
}

// repository is the repository the device's hash bucket is computed in:
// the source's, without registry host (a bundle's: its root's).
func (t *attempt) repository() string {
	if t.s.file != "" {
		return t.o.root.Repository
	}
	return t.s.ref.Repository
}

// applyWindow holds the revision back outside the source's apply windows,
// unless the request ignores them.
func (t *attempt) applyWindow() error {
	sched := t.s.cfg.Windows.Apply
	now := t.a.now()
	if t.req.ignoreWindows || sched.Contains(now) {
		return nil
	}
	next := sched.Next(now)
	return t.waiting(store.WaitWindow, fmt.Sprintf("waiting for the apply window (opens %s; windows: %s)", rollout.FormatTime(next), sched), next)
}

// downloadWindow holds a revision that is not in the store yet back
// outside the source's download windows, unless the request ignores them;
// a rollback is not held back.
func (t *attempt) downloadWindow() error {
	sched := t.s.cfg.Windows.Download
	now := t.a.now()
	if t.req.ignoreWindows || t.req.rollback || sched.Contains(now) {
		return nil
	}
	next := sched.Next(now)
	return t.waiting(store.WaitDownload, fmt.Sprintf("waiting for the download window (opens %s; windows: %s)", rollout.FormatTime(next), sched), next)
}

// inhibited holds the revision back while an inhibitor holds an app of the
// new revision or of the current one. Expired inhibitors hold nothing; an
// unreadable inhibitor folder holds everything (and says so).
func (t *attempt) inhibited() error {
	apps := t.a.apps(t.name, t.ds, t.current)
	if len(apps) == 0 {
		return nil
	}
	now := t.a.now()
	held, problems, err := inhibit.Open(inhibit.Dir(t.a.cfg.StateDir)).Holding(now, apps...)
	for _, p := range problems {
		t.a.log.Warn("inhibitor folder: not an inhibitor", "source", t.name, "file", p.File, "error", p.Error)
	}
	if err != nil {
		return t.waiting(store.WaitInhibitor, fmt.Sprintf("waiting: the inhibitors could not be read (%v)", err), time.Time{})
	}
	if len(held) == 0 {
		return nil
	}
	var until time.Time
	parts := make([]string, len(held))
	for i, in := range held {
		parts[i] = in.String()
		if in.Until.After(until) {
			until = in.Until
		}
	}
	return t.waiting(store.WaitInhibitor, "waiting: inhibited by "+strings.Join(parts, "; "), until)
}

// apps lists the apps of ds (with the extensions the device enables) and
// of the revision digest of source in the store, sorted, once each.
func (a *Agent) apps(source string, ds *state.DeviceState, digest string) []string {
	var out []string
	add := func(ds *state.DeviceState) {
		if ds == nil {
			return
		}
		for _, app := range ds.Apps {
			out = append(out, app.Name)
		}
		for _, ext := range ds.Extensions {
			if slices.Contains(a.cfg.Extensions, ext.Name) {
				out = append(out, ext.Name)
			}
		}
	}
	add(ds)
	if digest != "" && a.store.Has(digest) {
		if dir, err := a.store.RevisionDir(digest); err == nil {
			if cur, err := loadState(dir); err == nil {
				add(cur)
			} else {
				a.log.Warn("cannot read the apps of the current revision for inhibitors", "source", source, "digest", digest, "error", err)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// waiting ends the attempt with the revision held back, and keeps what
// verify learnt of it for the next polls.
func (t *attempt) waiting(reason store.WaitReason, msg string, until time.Time) error {
	if reason != store.WaitDownload {
		t.remember()
	}
	return t.hold(reason, msg, until)
}

// hold ends the attempt with the revision held back.
func (t *attempt) hold(reason store.WaitReason, msg string, until time.Time) error {
	now := t.a.now()
	w := &store.Waiting{Digest: t.rev.Digest, Reason: reason, Message: msg, Until: until, Since: now}
	t.a.mu.Lock()
	if old := t.a.state.Source(t.name).Waiting; old != nil && old.Digest == w.Digest && old.Reason == reason {
		w.Since = old.Since
	}
	t.a.mu.Unlock()
	t.wait, t.rev.Message = w, msg
	return errWaiting
}

// settled ends the attempt early, before anything is fetched, when the
// release resolved was stopped by a signed statement that no look-up can
// change any more (its rollout is over): an abort or a pause read during
// the rollout holds for good, and a poll of it costs the tag alone.
func (t *attempt) settled() error {
	a := t.a
	if t.applied != nil && t.applied.Digest == t.rev.Digest {
		return nil
	}
	rec := a.release(t.name, t.rev.Digest)
	if rec == nil || lookupsDue(*rec, a.now(), t.s.cfg.Interval) {
		return nil
	}
	dec, err := rollout.Decide(rollout.Input{Action: rollout.Action(rec.Action), Now: a.now()})
	if err != nil {
		return nil
	}
	switch dec.Verdict {
	case rollout.Aborted:
		t.rev.Message = dec.Reason + signedBy(rec.Statement)
		return errAborted
	case rollout.Paused:
		return t.hold(store.WaitPaused, dec.Reason+signedBy(rec.Statement), time.Time{})
	}
	return nil
}

// statements reads the signed statements of the release of rec and records
// what they say. A registry failure is an error: a statement may hide
// behind it, so the release is not adopted (a device on it stays) until
// they can be read. A source without trust policy (insecureSkipVerify)
// cannot verify statements and reads none.
func (t *attempt) statements(ctx context.Context, rec *store.Release) error {
	a := t.a
	if t.s.cfg.InsecureSkipVerify {
		return nil
	}
	if err := a.open(ctx, t.o); err != nil {
		return err
	}
	ref := t.o.ref.WithDigest(rec.Digest)
	res, _, err := t.o.remote.Statements(ctx, ref, t.s.policy, statement.Options{})
	if err != nil {
		return fmt.Errorf("rollout statements of %s could not be read, so the release is not adopted (a device on it stays on it) until they can: %w", ref, err)
	}
	rec.LookedUp = a.now()
	before := rec.Action
	rec.Action, rec.Statement = string(res.Action()), nil
	if l := res.Latest; l != nil {
		rec.Statement = &store.Statement{Action: string(l.Action), SignedAt: l.SignedAt, Signer: l.Signer, Reason: l.Reason}
	}
	ignored := len(res.Ignored)
	if ignored != rec.Ignored {
		for _, ig := range res.Ignored {
			a.log.Warn("rollout statement ignored", "source", t.name, "digest", rec.Digest, "referrer", ig.Referrer, "reason", ig.Reason)
		}
	}
	rec.Ignored, rec.IgnoredReason = ignored, ""
	if ignored > 0 {
		rec.IgnoredReason = res.Ignored[0].Reason
	}
	a.metrics.SetStatementsIgnored(t.name, ignored)
	if rec.Action != before {
		a.log.Info("rollout statement", "source", t.name, "digest", rec.Digest, "action", rec.Action, "statement", rec.Statement)
	}
	return nil
}

// signedBy describes the statement behind a verdict: " (signed by S at T:
// reason)".
func signedBy(s *store.Statement) string {
	if s == nil {
		return ""
	}
	out := fmt.Sprintf(" (signed by %s at %s", s.Signer, rollout.FormatTime(s.SignedAt))
	if s.Reason != "" {
		out += ": " + s.Reason
	}
	return out + ")"
}

// lookupsDue reports whether the statements of the release of rec are
// looked up at now: the window of rollout.Lookups (from first sight until
// the last wave has been open for one more interval, and at least one
// interval after first sight), from what rec recorded of the plan.
func lookupsDue(rec store.Release, now time.Time, interval time.Duration) bool {
	if rec.End.IsZero() {
		return false
	}
	until := rec.End.Add(interval)
	if fs := rec.FirstSeen.Add(interval); fs.After(until) {
		until = fs
	}
	return now.Before(until)
}

// onRelease looks at the rollout of the release the device runs while it
// is in progress: when a signed abort stops it, the attempt goes on with
// the revision the device ran before it (t.revertFrom is set). It costs no
// request outside the release's rollout.
func (t *attempt) onRelease(ctx context.Context) error {
	a := t.a
	if t.applied == nil || t.current != t.applied.Digest {
		return nil
	}
	rec := a.release(t.name, t.applied.Digest)
	if rec == nil || rec.End.IsZero() {
		return nil
	}
	if t.rev.Digest == rec.Digest {
		a.metrics.SetWave(t.name, rec.Digest, rec.Wave)
	}
	if lookupsDue(*rec, a.now(), t.s.cfg.Interval) {
		if err := t.statements(ctx, rec); err != nil {
			a.putRelease(t.name, *rec)
			return err
		}
	}
	if rollout.Action(rec.Action) != rollout.Abort {
		a.putRelease(t.name, *rec)
		return nil
	}
	rec.Verdict = string(rollout.Revert)
	a.putRelease(t.name, *rec)
	prev := rec.Previous
	if prev == "" {
		prev = a.previousApplied(t.name, rec.Digest)
	}
	why := "rollout aborted by a signed statement" + signedBy(rec.Statement)
	if prev == "" {
		unchanged := *t.applied
		unchanged.Time, unchanged.Apps, unchanged.Message = t.rev.Time, nil,
			why+": the device ran nothing before this release, so it stays on it; publish a fixed release"
		t.rev = unchanged
		return errAborted
	}
	a.log.Warn("release aborted: going back to the revision before it", "source", t.name, "from", rec.Digest, "to", prev, "statement", rec.Statement)
	t.revert(rec.Digest, prev, why+": went back from "+rec.Digest)
	return nil
}

// revert turns the attempt into the return from the aborted release from
// to the revision to, which the signed abort authorizes: no downgrade
// check, no rollout plan, no update window (the inhibitors still hold it).
func (t *attempt) revert(from, to, msg string) {
	via := t.rev.Via
	if via != nil {
		via = &store.Via{}
	}
	t.revertFrom = from
	t.req.rollback = true
	t.ref = t.o.ref.WithDigest(to)
	rev := store.Revision{Digest: to, URL: t.ref.String(), Time: t.rev.Time, Extensions: t.rev.Extensions,
		Via: via, Outcome: store.OutcomeRolledBack, Message: msg}
	t.a.mu.Lock()
	for _, r := range t.a.state.Source(t.name).History {
		if r.Digest == to {
			rev.Tag, rev.Version = r.Tag, r.Version
			break
		}
	}
	t.a.mu.Unlock()
	t.rev = rev
}

// previousApplied is the newest revision of the source's history applied
// before digest, other than digest; "" when none.
func (a *Agent) previousApplied(source, digest string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	seen := false
	for _, r := range a.state.Source(source).History {
		if r.Digest == digest {
			seen = true
			continue
		}
		if seen && (r.Outcome == store.OutcomeApplied || r.Outcome == store.OutcomeRolledBack) {
			return r.Digest
		}
	}
	return ""
}

// release returns a copy of the source's record of digest, nil when none.
func (a *Agent) release(source, digest string) *store.Release {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.state.Source(source).Release(digest)
	if r == nil {
		return nil
	}
	c := *r
	return &c
}

// putRelease stores the source's record of a release; state.json is
// written with the attempt's outcome when the record changed (besides when
// statements were last read).
func (a *Agent) putRelease(source string, r store.Release) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ss := a.state.Source(source)
	if old := ss.Release(r.Digest); old != nil {
		o := *old
		o.LookedUp = r.LookedUp
		if reflect.DeepEqual(o, r) {
			old.LookedUp = r.LookedUp
			return
		}
	}
	var keep []string
	if ss.Applied != nil {
		keep = append(keep, ss.Applied.Digest)
	}
	if ss.Waiting != nil {
		keep = append(keep, ss.Waiting.Digest)
	}
	ss.PutRelease(r, append(keep, r.Digest)...)
	if s := a.sources[source]; s != nil {
		s.dirty = true
	}
}

// waitMetric is the reason label of berth_rollout_waiting for r.
func waitMetric(r store.WaitReason) metrics.WaitReason {
	switch r {
	case store.WaitWave:
		return metrics.WaitWave
	case store.WaitWindow, store.WaitDownload:
		return metrics.WaitWindow
	case store.WaitInhibitor:
		return metrics.WaitInhibitor
	case store.WaitPaused:
		return metrics.WaitPaused
	}
	return metrics.WaitReason(r) // recorded as "other"
}

// windowsStatus describes a source's update windows at now.
func windowsStatus(w config.Windows, now time.Time) *api.Windows {
	out := &api.Windows{Apply: w.Apply.String(), Download: w.Download.String(), ApplyOpen: w.Apply.Contains(now)}
	if !out.ApplyOpen {
		out.NextApply = w.Apply.Next(now)
	}
	return out
}

// holding lists the inhibitors that hold, at now, the apps of the
// source's current revision or of the revision waiting.
func (a *Agent) holding(ss *api.SourceStatus, now time.Time) []inhibit.Inhibitor {
	current, _ := a.store.Current(ss.Name)
	var ds *state.DeviceState
	if w := ss.Waiting; w != nil && a.store.Has(w.Digest) {
		if dir, err := a.store.RevisionDir(w.Digest); err == nil {
			ds, _ = loadState(dir)
		}
	}
	apps := a.apps(ss.Name, ds, current)
	if len(apps) == 0 {
		return nil
	}
	held, _, err := inhibit.Open(inhibit.Dir(a.cfg.StateDir)).Holding(now, apps...)
	if err != nil {
		return nil
	}
	return held
}
