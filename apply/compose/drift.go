package compose

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"

	"github.com/berth-dev/berth/apply/internal/converge"
	"github.com/berth-dev/berth/state"
)

// Drift correction limits.
const (
	// defaultMaxRestores restores of one project within defaultRestoreWindow
	// make it flapping: it is then left alone until the window has passed.
	defaultMaxRestores   = 5
	defaultRestoreWindow = 10 * time.Minute
	// defaultDebounce gathers the events of one incident (a `docker rm -f`
	// sends kill, die and destroy) into one check.
	defaultDebounce = 500 * time.Millisecond
	// DefaultDriftInterval is Watch's re-check interval when given none.
	DefaultDriftInterval = time.Minute
)

// DriftState is what drift correction did to one project, for status.
type DriftState struct {
	Source string `json:"source"`
	App    string `json:"app"`
	// Restores counts the restores since the agent started.
	Restores int `json:"restores"`
	// LastRestore is when the project was last restored.
	LastRestore time.Time `json:"lastRestore,omitzero"`
	// LastReason says what drifted, last time drift was found.
	LastReason string `json:"lastReason,omitempty"`
	// LastError is the error of the last restore, empty if it succeeded.
	LastError string `json:"lastError,omitempty"`
	// Flapping is set when the project needed more restores than allowed
	// within the window: it is not restored again until the window passes.
	Flapping bool `json:"flapping"`
}

// appTarget is what a project was last converged to by this Applier: an
// app of a revision.
type appTarget = converge.Target

// Drift returns the drift corrections so far, by project name.
func (a *Applier) Drift() map[string]DriftState {
	a.driftMu.Lock()
	defer a.driftMu.Unlock()
	now := time.Now()
	out := make(map[string]DriftState, len(a.drift))
	for name, r := range a.drift {
		st := *r
		st.Flapping = st.Flapping && a.limit.Saturated(name, now)
		out[name] = st
	}
	return out
}

// allowRestore records that project drifted for reason and says whether it
// may be restored now.
func (a *Applier) allowRestore(project string, t appTarget, reason string) bool {
	a.driftMu.Lock()
	defer a.driftMu.Unlock()
	r, ok := a.drift[project]
	if !ok {
		r = &DriftState{Source: t.Rev.Source, App: t.App.Name}
		a.drift[project] = r
	}
	now := time.Now()
	r.LastReason = reason
	if ok, restores, until := a.limit.Allow(project, now); !ok {
		if !r.Flapping {
			r.Flapping = true
			a.log.Warn("compose: app is flapping: not restoring it any more until the window passes",
				"source", t.Rev.Source, "app", t.App.Name, "project", project, "reason", reason,
				"restores", restores, "window", a.limit.Window, "until", until)
		}
		return false
	}
	r.Flapping = false
	r.Restores++
	r.LastRestore = now
	return true
}

func (a *Applier) restoreDone(project string, err error) {
	a.driftMu.Lock()
	defer a.driftMu.Unlock()
	if r, ok := a.drift[project]; ok {
		r.LastError = ""
		if err != nil {
			r.LastError = err.Error()
		}
	}
}

// Watch keeps the applied projects as their revision says until ctx is
// done. applied returns the revision applied on every source. Watch
// subscribes to the engine's events (a container of berth's stopping,
// dying, being killed or removed) and also re-checks every interval (default
// DefaultDriftInterval). A project with a container missing, stopped, or
// whose LabelConfigHash differs from what its app produces (changed by hand)
// is restored with the same up as Apply; the services whose hash differs
// are recreated even when Compose's own hash still matches. Projects are
// restored to what this Applier last converged them to (see targetsOf). A
// source that an Apply is converging is left alone. A project restored more
// than 5 times in 10 minutes is flapping: Watch logs it and leaves it alone
// until the window has passed. Watch returns ctx's error.
func (a *Applier) Watch(ctx context.Context, applied func() []state.Revision, interval time.Duration) error {
	if interval <= 0 {
		interval = DefaultDriftInterval
	}
	kick := make(chan struct{}, 1)
	go a.watchEvents(ctx, kick)

	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()

	busy := a.checkAll(ctx, applied)
	for {
		if busy {
			// A source was being applied: look again soon.
			debounce.Reset(a.debounce)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-kick:
			debounce.Reset(a.debounce)
			busy = false
			continue
		case <-debounce.C:
		case <-ticker.C:
		}
		busy = a.checkAll(ctx, applied)
	}
}

// watchEvents sends on kick whenever a berth container stops, dies, is
// killed or removed, resubscribing when the stream breaks.
func (a *Applier) watchEvents(ctx context.Context, kick chan<- struct{}) {
	f := make(client.Filters).
		Add("type", string(events.ContainerEventType)).
		Add("label", LabelSource).
		Add("event", string(events.ActionDie), string(events.ActionStop), string(events.ActionDestroy), string(events.ActionKill))
	backoff := time.Second
	for ctx.Err() == nil {
		res := a.docker.Events(ctx, client.EventsListOptions{Filters: f})
		ok := true
		for ok {
			select {
			case <-ctx.Done():
				return
			case m := <-res.Messages:
				backoff = time.Second
				a.log.Debug("compose: container event", "action", m.Action, "container", m.Actor.Attributes["name"], "project", m.Actor.Attributes["com.docker.compose.project"])
				select {
				case kick <- struct{}{}:
				default:
				}
			case err := <-res.Err:
				if ctx.Err() != nil {
					return
				}
				a.log.Warn("compose: docker events interrupted; drift is checked every interval meanwhile", "err", err, "retry", backoff)
				ok = false
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
		// Whatever happened while unsubscribed is caught by this check.
		select {
		case kick <- struct{}{}:
		default:
		}
	}
}

// checkAll checks the projects of every applied revision once. It reports
// whether a source was skipped because an Apply holds it.
func (a *Applier) checkAll(ctx context.Context, applied func() []state.Revision) (busy bool) {
	for _, rev := range applied() {
		if ctx.Err() != nil {
			return false
		}
		mu := a.state.Lock(rev.Source)
		if !mu.TryLock() {
			busy = true
			continue
		}
		for _, t := range a.state.TargetsOf(rev, isCompose) {
			a.checkApp(ctx, t)
		}
		mu.Unlock()
	}
	return busy
}

// checkApp restores the project of t when it drifted. The source's lock is
// held.
func (a *Applier) checkApp(ctx context.Context, t appTarget) {
	name := ProjectName(t.Rev.Source, t.App.Name)
	log := a.log.With("source", t.Rev.Source, "app", t.App.Name, "project", name, "revision", t.Rev.Digest)
	ap, err := a.load(ctx, t.Rev, t.App)
	if err != nil {
		log.Warn("compose: drift check: cannot load the applied project", "err", err)
		return
	}
	cs, err := a.containers(ctx, name)
	if err != nil {
		log.Warn("compose: drift check failed", "err", err)
		return
	}
	reason, force := drifted(ap, cs)
	if reason == "" {
		return
	}
	if !a.allowRestore(name, t, reason) {
		return
	}
	log.Info("compose: restoring drifted app", "reason", reason, "recreate", force)
	err = a.ensureImages(ctx, ap.project)
	if err == nil {
		err = a.up(ctx, ap, force, a.waitTimeout(t.App))
	}
	if err == nil {
		if err = a.settle(ctx, ap.project, t.App); err != nil {
			err = a.describeFailure(ctx, ap.project, err)
		}
	}
	a.restoreDone(name, err)
	if err != nil {
		log.Warn("compose: restoring drifted app failed", "reason", reason, "err", err)
		return
	}
	log.Info("compose: restored drifted app", "reason", reason)
}

// drifted compares a project's containers with what it should be. It
// returns why it drifted ("" when it did not) and the services whose
// containers were changed by hand.
func drifted(ap *appProject, cs []ctr) (reason string, force []string) {
	var reasons []string
	p := ap.project
	for _, svc := range p.ServiceNames() {
		s := p.Services[svc]
		n := 0
		changed := false
		for i := range cs {
			c := &cs[i]
			if c.service != svc {
				continue
			}
			n++
			switch {
			case c.labels[LabelConfigHash] != ap.hashes[svc]:
				reasons = append(reasons, fmt.Sprintf("container %s of service %q was changed (config hash differs)", c.name, svc))
				changed = true
			case c.state == container.StateExited && c.exitCode == 0 && oneShot(p, svc):
			case c.state == container.StateExited || c.state == container.StateDead || c.state == container.StateCreated:
				reasons = append(reasons, fmt.Sprintf("container %s of service %q is %s", c.name, svc, c.state))
			}
		}
		if changed {
			force = append(force, svc)
		}
		if want := s.GetScale(); n < want {
			reasons = append(reasons, fmt.Sprintf("service %q has %d of %d containers", svc, n, want))
		}
	}
	for i := range cs {
		if _, ok := p.Services[cs[i].service]; !ok {
			reasons = append(reasons, fmt.Sprintf("container %s belongs to no service of the app", cs[i].name))
		}
	}
	return strings.Join(reasons, "; "), force
}

// Report returns the live state of every project this applier converged,
// with its drift record, for `berth status`.
func (a *Applier) Report(ctx context.Context) []state.AppReport {
	drift := a.Drift()
	var out []state.AppReport
	for _, t := range a.state.Targets() {
		r := state.AppReport{Source: t.Rev.Source, App: t.App.Name, Kind: kind}
		name := ProjectName(r.Source, r.App)
		if d, ok := drift[name]; ok {
			r.Drift = &state.Drift{Restores: d.Restores, LastRestore: d.LastRestore, LastError: d.LastError, Flapping: d.Flapping}
			if d.LastReason != "" {
				r.Drift.Drifted = []string{d.LastReason}
			}
		}
		r.Detail = a.detail(ctx, name)
		r.View = view(r.Detail)
		out = append(out, r)
	}
	slices.SortFunc(out, func(x, y state.AppReport) int {
		return cmp.Or(strings.Compare(x.Source, y.Source), strings.Compare(x.App, y.App))
	})
	return out
}

// view is the shared view of a project's Detail; nil without one.
func view(raw json.RawMessage) *state.View {
	var d Detail
	if len(raw) == 0 || json.Unmarshal(raw, &d) != nil || d.Project == "" {
		return nil
	}
	v := &state.View{Unit: "project " + d.Project}
	for _, s := range d.Services {
		v.Parts = append(v.Parts, state.Part{Name: s.Name, State: s.State, Health: s.Health, Ref: s.Image, Mirror: s.Source})
	}
	return v
}
