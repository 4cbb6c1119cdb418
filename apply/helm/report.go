package helm

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/berth-dev/berth/state"
)

// Status: the live state of every release the applier keeps, with its
// last apply result and drift record, for `berth status`.

// ReleaseReport is the live state of one managed release, for `berth
// status`.
type ReleaseReport struct {
	Source string `json:"source"`
	App    string `json:"app"`
	Detail
	// LastApply is the outcome of the last Apply of the release.
	LastApply *ApplyResult `json:"lastApply,omitempty"`
	// Drift is what drift correction found and did.
	Drift *DriftState `json:"drift,omitempty"`
	// Error says why the live state could not be read.
	Error string `json:"error,omitempty"`
}

// Report returns the live state of every release this applier converged
// or keeps free of drift, with its last apply result and drift record,
// for `berth status` (see releases).
func (a *Applier) Report(ctx context.Context) []state.AppReport {
	rels := a.releases(ctx)
	out := make([]state.AppReport, 0, len(rels))
	for _, key := range slices.Sorted(maps.Keys(rels)) {
		r := rels[key]
		rep := state.AppReport{Source: r.Source, App: r.App, Kind: "helm", Error: r.Error}
		rep.Detail, _ = json.Marshal(r.Detail)
		if r.Error == "" {
			rep.View = view(r.Detail)
		}
		if l := r.LastApply; l != nil {
			rep.LastApply = &state.ApplyResult{Outcome: l.Outcome, Time: l.Time, Message: l.Message}
		}
		if d := r.Drift; d != nil {
			rep.Drift = &state.Drift{LastCheck: d.LastCheck, Drifted: d.Drifted, Restores: d.Restores, LastRestore: d.LastRestore, LastError: d.LastError, Flapping: d.Flapping}
		}
		out = append(out, rep)
	}
	return out
}

// view is the shared view of a release's Detail.
func view(d Detail) *state.View {
	if d.Release == "" {
		return nil
	}
	v := &state.View{Unit: "release " + d.Namespace + "/" + d.Release, State: "not installed", NotReady: d.NotReady}
	if d.Revision > 0 {
		v.State = fmt.Sprintf("revision %d %s", d.Revision, d.Status)
	}
	if d.Chart != "" {
		v.Parts = []state.Part{{Name: "chart", Ref: d.Chart + " " + d.ChartVersion, Digest: d.ChartDigest, Mirror: d.Mirror}}
	}
	return v
}

// releases returns the live state of every release this applier converged
// or keeps free of drift, keyed by "namespace/release", with its last
// apply result and drift record. The releases are
// those Apply left its sources on since the agent started, and the apps of
// the applied revisions the drift loop (Watch) works from: after a restart
// on an already applied revision, these are reported before any Apply.
// Each is read from Helm's release storage, the newest revision; a release
// that another source or app owns now is reported with an Error. Report
// only reads.
func (a *Applier) releases(ctx context.Context) map[string]ReleaseReport {
	_ = ctx // Helm's storage takes no context
	type item struct {
		source string
		app    state.App
	}
	items := map[string]item{}
	add := func(t appTarget) {
		items[releaseKey(a.namespace(t.App.Helm), t.App.Helm.ReleaseName)] = item{t.Rev.Source, t.App}
	}
	a.stateMu.Lock()
	applied := a.applied
	a.stateMu.Unlock()
	if applied != nil {
		// What the drift loop keeps: Apply's targets where it ran, else
		// the apps of the applied revision.
		for _, rev := range applied() {
			for _, t := range a.state.TargetsOf(rev, isHelm) {
				add(t)
			}
		}
	}
	drift := a.Drift()
	a.stateMu.Lock()
	for key, e := range a.results {
		items[key] = item{e.source, e.app}
	}
	results := maps.Clone(a.results)
	a.stateMu.Unlock()
	for _, t := range a.state.Targets() {
		add(t)
	}

	out := map[string]ReleaseReport{}
	for key, it := range items {
		h := it.app.Helm
		ns, name := a.namespace(h), h.ReleaseName
		r := ReleaseReport{Source: it.source, App: it.app.Name, Detail: Detail{Release: name, Namespace: ns}}
		if e, ok := results[key]; ok {
			res := e.res
			r.LastApply = &res
		}
		if d, ok := drift[key]; ok {
			r.Drift = &d
		}
		if cfg, _, err := a.actionConfig(ns, 0); err != nil {
			r.Error = err.Error()
		} else if hist, err := cfg.Releases.History(name); err != nil && !isNotFound(err) {
			r.Error = fmt.Sprintf("read release %s: %v", key, err)
		} else if last := latest(hist); last != nil && (last.Labels[LabelSource] != it.source || last.Labels[LabelApp] != it.app.Name) {
			r.Error = fmt.Sprintf("%v: release %s belongs to %s", ErrNotOwned, key, owner(last))
		} else {
			fillDetail(&r.Detail, last)
		}
		out[key] = r
	}
	return out
}
