// control.go holds what the local API asks of the agent: reconcile now,
// suspend, roll back, webhooks, readiness and status.

package reconcile

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/config"
	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/source/oci"
)

// ReconcileNow reconciles source (or every source for "") at once and
// waits for the result. A suspended source is reported, not reconciled.
// With o.IgnoreWindows the update windows do not hold the revision back
// (rollout waves, signed statements and inhibitors still do).
func (a *Agent) ReconcileNow(ctx context.Context, name string, o api.ReconcileOptions) ([]api.ReconcileResult, error) {
	names := a.order
	if a.isMargo(name) {
		return []api.ReconcileResult{a.margo.now(ctx)}, nil
	}
	if name != "" {
		if _, ok := a.sources[name]; !ok {
			return nil, fmt.Errorf("%w %q (configured: %v)", api.ErrUnknownSource, name, a.order)
		}
		names = []string{name}
	}
	var out []api.ReconcileResult
	for _, n := range names {
		if a.suspended(n) {
			out = append(out, api.ReconcileResult{Source: n, Outcome: "suspended", Error: "source is suspended: berth resume " + n})
			continue
		}
		out = append(out, a.reconcile(ctx, n, a.sources[n], request{force: true, ignoreWindows: o.IgnoreWindows}))
	}
	if name == "" && a.margo != nil {
		out = append(out, a.margo.now(ctx))
	}
	return out, nil
}

// Suspend stops or resumes reconciling a source; the choice survives a
// restart.
func (a *Agent) Suspend(name string, suspend bool) error {
	if _, ok := a.sources[name]; !ok && !a.isMargo(name) {
		return fmt.Errorf("%w %q", api.ErrUnknownSource, name)
	}
	a.mu.Lock()
	a.state.Source(name).Suspended = suspend
	err := store.WriteState(a.cfg.StateDir, a.state)
	a.mu.Unlock()
	if err != nil {
		return err
	}
	a.log.Info("source suspended", "source", name, "suspended", suspend)
	if !suspend {
		a.trigger(name)
	}
	return nil
}

// Rollback applies an earlier revision of source (the previous applied one
// when digest is ""), verified again, and suspends the source so that the
// next poll does not move it forward again.
func (a *Agent) Rollback(ctx context.Context, name, digest string) (api.ReconcileResult, error) {
	s, ok := a.sources[name]
	if a.isMargo(name) {
		return api.ReconcileResult{}, fmt.Errorf("%w: the Margo source follows its WFM, which decides each deployment's revision: suspend it with berth suspend %s to keep what runs", api.ErrConflict, name)
	}
	if !ok {
		return api.ReconcileResult{}, fmt.Errorf("%w %q", api.ErrUnknownSource, name)
	}
	if digest == "" {
		a.mu.Lock()
		ss := a.state.Source(name)
		var cur string
		if ss.Applied != nil {
			cur = ss.Applied.Digest
		}
		for _, r := range ss.History {
			if (r.Outcome == store.OutcomeApplied || r.Outcome == store.OutcomeRolledBack) && r.Digest != cur {
				digest = r.Digest
				break
			}
		}
		a.mu.Unlock()
		if digest == "" {
			return api.ReconcileResult{}, fmt.Errorf("%w: %s has no earlier applied revision: give one with --to DIGEST", ErrNoRollback, name)
		}
	}
	res := a.reconcile(ctx, name, s, request{force: true, digest: digest, rollback: true})
	if res.Error != "" {
		return res, nil
	}
	if err := a.Suspend(name, true); err != nil {
		return res, err
	}
	return res, nil
}

// NotifyRepository triggers the sources that track host/repository, for a
// registry's push notification: the source's own repository, or its copy
// on one of its registry mirrors (a mirror notifying that it was synced).
func (a *Agent) NotifyRepository(_ context.Context, host, repository, _, _ string) []string {
	var hit []string
	for _, name := range a.order {
		s := a.sources[name]
		if s.tracks(host, repository) && !a.suspended(name) {
			a.trigger(name)
			hit = append(hit, name)
		}
	}
	return hit
}

// tracks reports whether host/repository is the source's repository or
// its copy on one of its mirrors.
func (s *source) tracks(host, repository string) bool {
	if s.file != "" {
		return false
	}
	if s.ref.Registry == host && s.ref.Repository == repository {
		return true
	}
	for _, ep := range s.remote.Mirrors.Endpoints(s.ref.Repo() + "@sha256:" + strings.Repeat("0", 64)) {
		if r, err := oci.ParseReference(ep.Ref); err == nil && ep.Mirror != "" && r.Registry == host && r.Repository == repository {
			return true
		}
	}
	return false
}

// Ready is nil once every source has been attempted since the agent
// started.
func (a *Agent) Ready() error {
	var waiting []string
	for _, name := range a.order {
		s := a.sources[name]
		s.mu.Lock()
		done := s.attempted
		s.mu.Unlock()
		if !done && !a.suspended(name) {
			waiting = append(waiting, name)
		}
	}
	if a.margo != nil && !a.margo.ready() && !a.suspended(MargoSource) {
		waiting = append(waiting, MargoSource)
	}
	if len(waiting) > 0 {
		return fmt.Errorf("not reconciled yet: %v", waiting)
	}
	return nil
}

// Status reports the device, every source's configuration and recorded
// state (with the revision held back and the rollouts seen), its update
// windows and the inhibitors that hold its apps now, and the appliers'
// live reports.
func (a *Agent) Status() api.Status {
	st := api.Status{Version: a.version, StateDir: a.cfg.StateDir, Device: &api.Device{ID: a.device.ID, Labels: a.device.Labels}}
	for _, ap := range a.appliers {
		if r, ok := ap.(Reporter); ok {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			st.Apps = append(st.Apps, r.Report(ctx)...)
			cancel()
		}
	}
	now := a.now()
	a.mu.Lock()
	for _, name := range a.order {
		s := a.sources[name]
		s.mu.Lock()
		next, busy := s.next, s.reconciling
		s.mu.Unlock()
		ss := *a.state.Source(name)
		ss.History = slices.Clone(ss.History)
		ss.Releases = slices.Clone(ss.Releases)
		st.Sources = append(st.Sources, api.SourceStatus{
			Name: name, URL: s.cfg.URL, Ref: describeRef(s.cfg), Interval: s.cfg.Interval.String(),
			NextReconcile: next, Reconciling: busy, Windows: windowsStatus(s.cfg.Windows, now), SourceState: ss,
		})
	}
	if a.margo != nil {
		ss := *a.state.Source(MargoSource)
		ss.History = slices.Clone(ss.History)
		st.Sources = append(st.Sources, a.margo.status(ss))
	}
	a.mu.Unlock()
	for i := range a.order {
		st.Sources[i].Inhibitors = a.holding(&st.Sources[i], now)
	}
	return st
}

func describeRef(sc config.Source) string {
	switch {
	case sc.File != "":
		return "bundle root"

	case sc.Ref.Digest != "":
		return "digest " + sc.Ref.Digest
	case sc.Ref.Tag != "":
		return "tag " + sc.Ref.Tag
	case sc.Filter != nil:
		return fmt.Sprintf("filter %s (%s)", sc.Filter.Pattern, sc.Filter.Order)
	default:
		return "semver " + sc.Ref.Semver
	}
}

// ErrNoRollback is returned when there is no revision to roll back to; the
// API answers it with 409 Conflict.
var ErrNoRollback = fmt.Errorf("%w: nothing to roll back to", api.ErrConflict)
