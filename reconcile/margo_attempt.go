package reconcile

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/berth-dev/berth/reconcile/config"
	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/margo"
	"github.com/berth-dev/berth/source/margo/materialize"
	"github.com/berth-dev/berth/source/margo/spec"
	"github.com/berth-dev/berth/state"
)

// margoAttempt is one reconcile of the Margo source, step by step, in the
// order package margo's doc gives: report the capabilities (the first call
// after connecting, then on change), flush the queued status posts, poll (or, on
// 304 with deployments still to retry, replay the accepted manifest),
// materialize the deployments into a revision, post installing and
// removing, switch the revision in and apply it, put the deployments
// whose apply failed back on their previous revision, post the final
// statuses. The caller then records the outcome in state.json, and only
// then accept saves the accepted state: a stop at any point leaves the
// accepted manifestVersion at what was reconciled before.
type margoAttempt struct {
	m     *margoSource
	force bool
	rev   store.Revision
	st    *margo.State // a copy of the accepted state; saved by accept
	caps  *spec.Capabilities

	d    *margo.Desired
	mv   uint64
	prev *margoRevision // in force before the attempt; nil: none
	next *margoRevision // materialized
	// failed are the deployments not materialized (their previous apps
	// carried over); applyFailed those whose apply failed, with why.
	failed      map[string]materialize.Failure
	applyFailed map[string]string
	apps        []state.AppStatus // the first apply's reports
	finalApps   []state.AppStatus // what state.json records
	// pending are the removals that did not happen (a failed apply
	// prunes nothing): kept in the accepted state, tried again.
	pending  []string
	switched bool   // a revision was switched in
	final    string // the revision in force at the end
	// acceptable is set once the update is reconciled: accept then saves.
	acceptable bool
	build      []string // temporary folders to remove
	held       []string
}

func (m *margoSource) newAttempt(force bool) *margoAttempt {
	m.mu.Lock()
	st := m.st.Clone()
	m.mu.Unlock()
	return &margoAttempt{m: m, force: force, st: st, rev: store.Revision{URL: m.cfg.WFM, Time: time.Now().UTC()}}
}

// run runs the steps. Those up to the switch have a deadline of
// config.ReconcileTimeoutFactor × margo.timeout; the appliers have their
// own timeouts. A run that switched a revision in returns the failures of
// its deployments, if any.
func (t *margoAttempt) run(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, config.ReconcileTimeoutFactor*t.m.cfg.Timeout)
	defer cancel()
	for _, step := range []struct {
		run      func(context.Context) error
		deadline bool
	}{
		{t.capabilities, true}, // 1. capabilities: first after connecting, then on change
		{t.flush, true},        // 2. the status posts a WFM outage queued, in order
		{t.poll, true},         // 3. the desired state, verified; or the failed deployments again
		{t.materialize, true},  // 4. a revision folder, components verified, in the store
		{t.installing, false},  // 5. installing, removing
		{t.apply, false},       // 6. switch, apply, put failed deployments back
		{t.report, false},      // 7. installed, failed, removed
	} {
		c := ctx
		if step.deadline {
			c = dctx
		}
		if err := step.run(c); err != nil {
			if step.deadline && errors.Is(dctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
				err = fmt.Errorf("%w (the reconcile's deadline, %d × margo.timeout, passed: raise margo.timeout for slow links or large components)", err, config.ReconcileTimeoutFactor)
			}
			return err
		}
	}
	return t.failure()
}

// close removes the temporary folders and releases the held revisions.
func (t *margoAttempt) close() {
	for _, d := range t.build {
		os.RemoveAll(d)
	}
	for _, d := range t.held {
		t.m.a.hold(d, -1)
	}
}

func (t *margoAttempt) hold(d string) {
	t.m.a.hold(d, 1)
	t.held = append(t.held, d)
}

func (t *margoAttempt) flush(ctx context.Context) error {
	if err := t.m.rep.Flush(ctx); err != nil {
		t.m.log.Warn("Margo: queued status posts not delivered yet", "error", err)
	}
	return nil
}

// capabilities reports the device's capabilities when they changed, and
// always first after the agent started.
func (t *margoAttempt) capabilities(ctx context.Context) error {
	m := t.m
	caps, err := margo.Discover(m.info)
	if err != nil {
		return err
	}
	t.caps = caps
	m.mu.Lock()
	force := !m.capsSent
	m.mu.Unlock()
	sent, err := m.client.SyncCapabilities(ctx, t.st, caps, force)
	if err != nil || !sent {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.capsSent = true
	m.st.CapabilitiesDigest = t.st.CapabilitiesDigest
	if err := m.st.Save(m.statePath()); err != nil {
		m.log.Warn("Margo: could not save the capabilities sent", "error", err)
	}
	m.log.Info("Margo capabilities reported", "deviceId", m.cfg.DeviceID, "deploymentTypes", caps.Properties.SupportedDeploymentTypes)
	return nil
}

func (m *margoSource) statePath() string { return filepath.Join(m.dir, "state.json") }

// poll asks the WFM for the desired state. On 304, the accepted manifest
// is replayed from the cache when deployments of it failed before (not
// before their retry delay, unless asked) or removals are pending.
func (t *margoAttempt) poll(ctx context.Context) error {
	m := t.m
	cur, err := m.a.store.Current(MargoSource)
	if err != nil {
		return err
	}
	t.rev.Digest, t.final = cur, cur
	t.rev.Version = strconv.FormatUint(t.st.ManifestVersion, 10)
	// The revision in force is gone from the store (removed at start as
	// incomplete or damaged): the accepted state is built again, not
	// reported unchanged.
	lost := cur != "" && !m.a.store.Has(cur)
	if lost {
		m.log.Warn("Margo: the revision in force is missing or damaged in the store; building it again", "revision", cur)
	}
	d, err := m.client.Poll(ctx, t.st)
	if err != nil {
		return err
	}
	if d.NotModified {
		m.mu.Lock()
		wait := !t.force && time.Now().Before(m.retryAt) && !lost
		m.mu.Unlock()
		if t.st.ManifestDigest == "" || wait {
			return errUnchanged
		}
		if d, err = m.client.Replay(ctx, t.st); err != nil {
			return err
		}
		if d == nil || len(d.Changed) == 0 && len(d.Removed) == 0 && !lost {
			return errUnchanged
		}
		m.log.Info("Margo: retrying the deployments that failed", "deployments", d.Changed, "removals", d.Removed)
	}
	t.d, t.mv = d, d.Manifest.ManifestVersion
	t.rev.Version = strconv.FormatUint(t.mv, 10)
	if cur != "" {
		t.hold(cur)
		if t.prev, err = m.revision(cur); err != nil {
			m.log.Error("Margo: the revision in force is unreadable; applying the update as the first", "revision", cur, "error", err)
			t.prev = nil
		}
	}
	if len(d.Changed) == 0 && len(d.Removed) == 0 && !lost {
		// A new manifest that changes nothing for this device.
		t.acceptable = true
		return errUnchanged
	}
	return nil
}

// materialize builds the revision of the desired state into the store.
func (t *margoAttempt) materialize(ctx context.Context) error {
	m := t.m
	deps := make([]materialize.Deployment, len(t.d.Deployments))
	for i, v := range t.d.Deployments {
		deps[i] = materialize.Deployment{Digest: v.Ref.Digest, Deployment: v.Deployment}
	}
	o := t.options()
	o.DeviceID, o.Types, o.Capabilities, o.Fetcher, o.ManifestVersion = m.cfg.DeviceID, m.info.DeploymentTypes, t.caps, m.fetcher, t.mv
	o.Limits, o.MaxArchiveSize = archive.Limits{MaxSize: m.cfg.Limits.MaxSize, MaxFiles: m.cfg.Limits.MaxFiles}, m.cfg.Limits.MaxSize
	o.Download = m.download
	if o.Dir == "" {
		return errors.New("margo: no build folder")
	}
	res, err := materialize.Materialize(ctx, deps, o)
	if err != nil {
		return err
	}
	t.failed = res.Failed
	for id, f := range res.Failed {
		m.log.Warn("Margo deployment refused or not fetched: the device keeps what it ran", "deployment", id, "code", f.Code, "carried", f.Carried, "error", f.Err)
	}
	t.next, err = t.store(res)
	return err
}

// options are the Options of a revision built in a new temporary folder
// of the store, with the revision in force as the previous one.
func (t *margoAttempt) options() materialize.Options {
	o := materialize.Options{Source: MargoSource}
	build, err := os.MkdirTemp(filepath.Join(t.m.a.store.Dir(), "revisions"), "margo.tmp-")
	if err != nil {
		t.m.log.Error("Margo: cannot create a build folder in the store", "error", err)
		return o
	}
	t.build = append(t.build, build)
	o.Dir = filepath.Join(build, "rev")
	if t.prev != nil {
		o.Previous, o.PreviousDir = t.prev.plan, t.prev.rev.Dir
	}
	return o
}

// store moves a materialized revision into the store under its digest
// (an identical one may be there already) and holds it against GC.
func (t *margoAttempt) store(res *materialize.Result) (*margoRevision, error) {
	s := t.m.a.store
	d := res.Revision.Digest
	t.hold(d)
	dir, err := s.RevisionDir(d)
	if err != nil {
		return nil, err
	}
	if !s.Has(d) {
		// A folder of d without its completion record (a crash) goes first.
		if err := s.Discard(d); err != nil {
			return nil, err
		}
		if err := os.Rename(res.Revision.Dir, dir); err != nil {
			return nil, fmt.Errorf("store Margo revision %s: %w", d, err)
		}
		if err := syncFolder(filepath.Dir(dir)); err != nil {
			return nil, err
		}
		if err := s.Seal(d); err != nil {
			return nil, err
		}
	}
	rev := res.Revision
	rev.Dir = dir
	return &margoRevision{rev: rev, plan: res.Plan}, nil
}

func syncFolder(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// installing posts installing for the changed deployments that were
// materialized, and removing for those the manifest no longer lists.
func (t *margoAttempt) installing(ctx context.Context) error {
	m := t.m
	var changed []string
	for _, id := range t.d.Changed {
		if _, bad := t.failed[id]; !bad {
			changed = append(changed, id)
		}
	}
	sts := t.next.plan.Installing(m.cfg.DeviceID, changed, func(string) uint64 { return t.mv })
	for _, id := range t.d.Removed {
		sts = append(sts, margo.RemovalStatus(id, t.st.Deployments[id], m.cfg.DeviceID, spec.StateRemoving, t.mv))
	}
	m.post(ctx, sts...)
	return nil
}

// apply switches the revision in and applies it. The deployments whose
// apply failed (the appliers already brought each failing app back) are
// then put back entirely on what the previous revision had for them, or
// removed when it had none: that revision is built, switched in and
// applied, which also prunes the removals a failed apply holds back.
func (t *margoAttempt) apply(ctx context.Context) error {
	a := t.m.a
	if err := a.store.Switch(MargoSource, t.next.rev.Digest); err != nil {
		return err
	}
	t.switched, t.final = true, t.next.rev.Digest
	var prev *state.Revision
	if t.prev != nil {
		prev = &t.prev.rev
	}
	apps, err := a.apply(ctx, t.next.rev, prev)
	if ctx.Err() != nil {
		// Stopping: the next start puts the previous revision back.
		t.switched = false
		return fmt.Errorf("Margo update interrupted: %w", ctx.Err())
	}
	t.apps = withMissing(t.next.plan, apps, err)
	t.applyFailed = failedDeployments(t.next.plan, t.apps)
	t.finalApps = t.apps
	t.acceptable = true
	if len(t.applyFailed) == 0 {
		if err != nil {
			t.pending = slices.Clone(t.d.Removed)
		}
		return nil
	}
	for id, why := range t.applyFailed {
		t.m.log.Warn("Margo deployment failed to apply: putting it back on its previous revision", "deployment", id, "error", why)
	}
	o := t.options()
	if o.Dir == "" {
		t.pending = slices.Clone(t.d.Removed)
		return nil
	}
	res, err := materialize.Rollback(t.next.plan, t.next.rev.Dir, slices.Collect(maps.Keys(t.applyFailed)), o)
	var back *margoRevision
	if err == nil {
		back, err = t.store(res)
	}
	if err == nil {
		err = a.store.Switch(MargoSource, back.rev.Digest)
	}
	if err != nil {
		t.m.log.Error("Margo: could not build the revision that puts the failed deployments back; the failing apps were rolled back by the appliers", "error", err)
		t.pending = slices.Clone(t.d.Removed)
		return nil
	}
	t.final = back.rev.Digest
	apps2, err := a.apply(ctx, back.rev, &t.next.rev)
	if err != nil {
		t.m.log.Error("Margo: putting the failed deployments back failed", "error", err)
		t.pending = slices.Clone(t.d.Removed)
	}
	t.finalApps = mergeApps(apps2, t.apps, t.next.plan, t.applyFailed)
	return nil
}

// withMissing adds a failed report, with the appliers' error, for each app
// of the plan they did not report on when they failed as a whole (an
// engine down).
func withMissing(p *materialize.Plan, apps []state.AppStatus, err error) []state.AppStatus {
	if err == nil {
		return apps
	}
	seen := map[string]bool{}
	for _, s := range apps {
		seen[s.Name] = true
	}
	out := slices.Clone(apps)
	for _, d := range p.Deployments {
		for _, c := range d.Components {
			if !seen[c.App] {
				out = append(out, state.AppStatus{Name: c.App, Kind: d.Type, Outcome: outcomeFailed, Message: err.Error()})
			}
		}
	}
	return out
}

const outcomeFailed = "failed"

// failedDeployments are the deployments of p (not carried over) with an
// app the appliers failed, and why.
func failedDeployments(p *materialize.Plan, apps []state.AppStatus) map[string]string {
	byApp := map[string]state.AppStatus{}
	for _, s := range apps {
		byApp[s.Name] = s
	}
	out := map[string]string{}
	for _, d := range p.Deployments {
		if d.Carried {
			continue
		}
		for _, c := range d.Components {
			if s, ok := byApp[c.App]; ok && s.Outcome == outcomeFailed {
				out[d.ID] = fmt.Sprintf("component %s: %s", c.Name, s.Message)
				break
			}
		}
	}
	return out
}

// mergeApps is what state.json records after a failed deployment was put
// back: the reports of the revision in force, except for the apps of the
// failed deployments, whose failure is kept.
func mergeApps(final, first []state.AppStatus, p *materialize.Plan, failed map[string]string) []state.AppStatus {
	failedApp := map[string]state.AppStatus{}
	for _, s := range first {
		if d, _, ok := p.Find(s.Name); ok && failed[d.ID] != "" && s.Outcome == outcomeFailed {
			failedApp[s.Name] = s
		}
	}
	out := make([]state.AppStatus, 0, len(final))
	for _, s := range final {
		if f, ok := failedApp[s.Name]; ok {
			s = f
			delete(failedApp, s.Name)
		}
		out = append(out, s)
	}
	for _, s := range first {
		if _, ok := failedApp[s.Name]; ok {
			out = append(out, s)
		}
	}
	return out
}

// report posts the final status of every changed or failed deployment,
// and of every removal.
func (t *margoAttempt) report(ctx context.Context) error {
	m := t.m
	var deps []materialize.Deployment
	for _, v := range t.d.Deployments {
		id := v.Ref.DeploymentID
		_, bad := t.failed[id]
		if slices.Contains(t.d.Changed, id) || bad || t.applyFailed[id] != "" {
			deps = append(deps, materialize.Deployment{Digest: v.Ref.Digest, Deployment: v.Deployment})
		}
	}
	adopted := func(id string) uint64 {
		old, had := t.st.Deployments[id]
		_, bad := t.failed[id]
		if had && (bad || t.applyFailed[id] != "" || !slices.Contains(t.d.Changed, id)) {
			return old.AdoptedManifestVersion
		}
		return t.mv
	}
	sts := t.next.plan.Report(m.cfg.DeviceID, deps, t.apps, t.failed, adopted)
	for _, id := range t.d.Removed {
		if slices.Contains(t.pending, id) {
			continue
		}
		ds := t.st.Deployments[id]
		st := margo.RemovalStatus(id, ds, m.cfg.DeviceID, spec.StateRemoved, t.mv)
		if why := t.pruneFailure(id); why != "" {
			st = removalFailed(id, ds, m.cfg.DeviceID, t.mv, why)
			t.pending = append(t.pending, id)
		}
		sts = append(sts, st)
	}
	m.post(ctx, sts...)
	return nil
}

// pruneFailure is why an app of the removed deployment id could not be
// pruned; "" when all were.
func (t *margoAttempt) pruneFailure(id string) string {
	if t.prev == nil {
		return ""
	}
	for _, d := range t.prev.plan.Deployments {
		if d.ID != id {
			continue
		}
		for _, c := range d.Components {
			for _, s := range t.finalApps {
				if s.Name == c.App && s.Outcome == outcomeFailed {
					return s.Message
				}
			}
		}
	}
	return ""
}

func removalFailed(id string, ds margo.DeploymentState, deviceID string, adopted uint64, why string) spec.DeploymentStatus {
	cs := make([]spec.ComponentStatus, 0, len(ds.Components))
	for _, c := range ds.Components {
		cs = append(cs, spec.ComponentStatus{Name: c, State: spec.StateFailed, Error: &spec.StatusError{Code: "REMOVE_FAILED", Source: c, Message: why}})
	}
	return spec.NewStatus(id, deviceID, ds.Name, adopted, cs)
}

// failure sums up the deployments that failed, nil when none did.
func (t *margoAttempt) failure() error {
	t.rev.Digest, t.rev.Apps = t.final, t.finalApps
	var errs []error
	for _, id := range slices.Sorted(maps.Keys(t.failed)) {
		errs = append(errs, fmt.Errorf("%s: %w", t.name(id), t.failed[id].Err))
	}
	for _, id := range slices.Sorted(maps.Keys(t.applyFailed)) {
		errs = append(errs, fmt.Errorf("deployment %s (%s) failed and is back on its previous revision: %s", t.name(id), id, t.applyFailed[id]))
	}
	return errors.Join(errs...)
}

func (t *margoAttempt) name(id string) string {
	for _, v := range t.d.Deployments {
		if v.Ref.DeploymentID == id {
			return v.Deployment.Name
		}
	}
	return id
}

// accept saves the accepted state once the update is reconciled (after
// state.json recorded it): the new manifestVersion and ETag, the
// deployments applied at their new digest, the failed ones at what was
// accepted before (so that they are tried again), the removals that did
// not happen still listed, and the revision in force.
func (t *margoAttempt) accept() error {
	m := t.m
	if !t.acceptable || t.d == nil {
		return nil
	}
	failed := slices.Collect(maps.Keys(t.failed))
	failed = append(failed, slices.Collect(maps.Keys(t.applyFailed))...)
	st := t.st
	kept := map[string]margo.DeploymentState{}
	for _, id := range t.pending {
		kept[id] = st.Deployments[id]
	}
	st.Accept(t.d, failed...)
	if st.Deployments == nil && len(kept) > 0 {
		st.Deployments = map[string]margo.DeploymentState{}
	}
	maps.Copy(st.Deployments, kept)
	st.Revision = t.final
	m.mu.Lock()
	st.CapabilitiesDigest = m.st.CapabilitiesDigest
	if err := st.Save(m.statePath()); err != nil {
		m.mu.Unlock()
		return err
	}
	m.st = st
	if len(failed)+len(t.pending) > 0 {
		m.failures++
		m.retryAt = time.Now().Add(min(m.cfg.Interval<<min(m.failures-1, 10), max(m.cfg.Interval, 30*time.Minute)))
	} else {
		m.failures, m.retryAt = 0, time.Time{}
	}
	m.mu.Unlock()
	if err := m.client.PruneCache(st, t.d); err != nil {
		m.log.Warn("Margo: could not prune the content cache", "error", err)
	}
	return nil
}

// post queues status posts and sends them, in order; a post identical to
// the last one of its deployment is not sent again.
func (m *margoSource) post(ctx context.Context, sts ...spec.DeploymentStatus) {
	for _, st := range sts {
		raw, err := json.Marshal(st)
		if err != nil {
			continue
		}
		sum := fmt.Sprintf("%x", sha256.Sum256(raw))
		m.mu.Lock()
		same := m.posted[st.DeploymentID] == sum
		m.posted[st.DeploymentID] = sum
		m.mu.Unlock()
		if same {
			continue
		}
		m.log.Info("Margo deployment status", "deployment", st.DeploymentID, "state", st.Status.State, "adoptedManifestVersion", st.AdoptedManifestVersion)
		if err := m.rep.Report(ctx, st); err != nil {
			m.log.Warn("Margo status post queued: the WFM did not take it now", "deployment", st.DeploymentID, "state", st.Status.State, "error", err)
		}
	}
}
