package helm

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"

	"github.com/berth-dev/berth/state"
)

// Converging one release: install or upgrade it from the app's chart and
// values when they changed, and roll it back when that fails.

// applyApp converges the release of one app and rolls it back on failure,
// in steps: load the chart and values (loadApp), read the release's
// history (releaseHistory), stop there when the deployed revision already
// has this chart and these values, take over a revision left pending
// (recoverPending), make the namespace, record on the chart what it came
// from (annotate), install or upgrade (installOrUpgrade), and on failure
// say what was not ready and roll back (undo). It returns the app's
// status, what the release is left on (nil when it is not deployed), and
// the error of the app.
func (a *Applier) applyApp(ctx context.Context, rev state.Revision, prev *state.Revision, app state.App) (state.AppStatus, *appTarget, error) {
	h := app.Helm
	ns, name := a.namespace(h), h.ReleaseName
	key := releaseKey(ns, name)
	log := a.log.With("source", rev.Source, "app", app.Name, "release", key, "revision", rev.Digest)
	status := state.AppStatus{Name: app.Name, Kind: kind}
	detail := Detail{Release: name, Namespace: ns}
	finish := func(outcome, msg string, err error) (state.AppStatus, *appTarget, error) {
		status.Outcome, status.Message = outcome, msg
		status.Detail, _ = json.Marshal(detail)
		a.setResult(key, rev, app, outcome, msg)
		return status, nil, err
	}
	fail := func(err error) (state.AppStatus, *appTarget, error) {
		err = fmt.Errorf("app %q (release %s): %w", app.Name, key, err)
		log.Error("helm: apply failed", "err", err)
		st, _, err := finish(OutcomeFailed, err.Error(), err)
		return st, a.state.Target(rev.Source, app.Name), err
	}

	in, err := a.loadApp(ctx, rev, app, &detail)
	if err != nil {
		// Nothing was changed: what runs keeps running.
		return fail(err)
	}
	cfg, kc, err := a.actionConfig(ns, h.MaxHistory)
	if err != nil {
		return fail(err)
	}
	last, deployed, err := releaseHistory(cfg, rev, app, key)
	if err != nil {
		return fail(err)
	}
	if last != nil && last.Info.Status == release.StatusDeployed && last.Labels[LabelConfigHash] == in.hash {
		fillDetail(&detail, last)
		log.Debug("helm: release unchanged", "helmRevision", last.Version)
		st, _, _ := finish(OutcomeApplied, fmt.Sprintf("unchanged: revision %d of release %s is deployed with this chart and these values", last.Version, key), nil)
		return st, a.targetAfter(rev, prev, app, true), nil
	}
	if err := recoverPending(cfg, last, h, log); err != nil {
		return fail(err)
	}
	if err := a.ensureNamespace(ctx, kc, ns); err != nil {
		return fail(err)
	}

	annotate(in.chart, rev)
	start := time.Now()
	rel, install, err := installOrUpgrade(ctx, cfg, ns, rev, app, in, last, log)
	if err == nil {
		fillDetail(&detail, rel)
		verb := "upgraded to"
		if install {
			verb = "installed as"
		}
		msg := fmt.Sprintf("%s revision %d of release %s", verb, rel.Version, key)
		log.Info("helm: applied", "helmRevision", rel.Version, "took", time.Since(start).Round(time.Millisecond))
		st, _, _ := finish(OutcomeApplied, msg, nil)
		return st, a.targetAfter(rev, prev, app, true), nil
	}

	rbFailed, err := a.undo(ctx, cfg, h, install, deployed, rel, err, &detail, log)
	st, _, err := fail(err)
	if rbFailed {
		return st, a.state.Target(rev.Source, app.Name), err
	}
	if deployed == nil {
		return st, nil, err
	}
	return st, a.targetAfter(rev, prev, app, false), err
}

// appInput is what a release is made from.
type appInput struct {
	chart  *loadedChart
	values map[string]any
	hash   string // configHash of the chart and values
}

// loadApp loads the chart and the values of app and hashes them; it
// records the chart in detail as soon as it is loaded.
func (a *Applier) loadApp(ctx context.Context, rev state.Revision, app state.App, detail *Detail) (*appInput, error) {
	lc, err := a.loadChart(ctx, rev, app)
	if err != nil {
		return nil, err
	}
	detail.Chart, detail.ChartVersion = lc.chart.Name(), lc.chart.Metadata.Version
	detail.ChartDigest, detail.Mirror = lc.digest, lc.mirror
	vals, err := a.values(rev, app)
	if err != nil {
		return nil, err
	}
	hash, err := configHash(lc.digest, vals)
	if err != nil {
		return nil, err
	}
	return &appInput{chart: lc, values: vals, hash: hash}, nil
}

// releaseHistory returns the newest revision of the release key and its
// newest deployed one (nil when none), and fails when the release belongs
// to another source or app.
func releaseHistory(cfg *action.Configuration, rev state.Revision, app state.App, key string) (last, deployed *release.Release, err error) {
	hist, err := cfg.Releases.History(app.Helm.ReleaseName)
	if err != nil && !isNotFound(err) {
		return nil, nil, fmt.Errorf("read the release history: %w", err)
	}
	last, deployed = latest(hist), latestDeployed(hist)
	if last != nil && (last.Labels[LabelSource] != rev.Source || last.Labels[LabelApp] != app.Name) {
		return nil, nil, fmt.Errorf("%w: a release %s already exists and belongs to %s: rename the release (helm.releaseName) or remove it", ErrNotOwned, key, owner(last))
	}
	return last, deployed, nil
}

// recoverPending marks last failed when another Helm operation left it
// pending for longer than the app's timeout and pendingGrace: it was
// interrupted. A younger pending revision is an operation still running:
// an error.
func recoverPending(cfg *action.Configuration, last *release.Release, h *state.Helm, log *slog.Logger) error {
	if last == nil || !last.Info.Status.IsPending() {
		return nil
	}
	age := time.Since(last.Info.LastDeployed.Time)
	if age < h.Timeout+pendingGrace {
		return fmt.Errorf("revision %d of the release is %s since %s ago: another Helm operation is running; try again later", last.Version, last.Info.Status, age.Round(time.Second))
	}
	log.Warn("helm: release left pending by an interrupted operation: marking it failed", "helmRevision", last.Version, "status", last.Info.Status, "since", age.Round(time.Second))
	last.SetStatus(release.StatusFailed, fmt.Sprintf("berth: %s for %s, taken for interrupted", last.Info.Status, age.Round(time.Second)))
	if err := cfg.Releases.Update(last); err != nil {
		return fmt.Errorf("mark the interrupted revision %d failed: %w", last.Version, err)
	}
	return nil
}

// annotate records on the chart, and so on the release, what it came
// from: the chart digest, the berth revision and the mirror that served
// it.
func annotate(lc *loadedChart, rev state.Revision) {
	if lc.chart.Metadata.Annotations == nil {
		lc.chart.Metadata.Annotations = map[string]string{}
	}
	lc.chart.Metadata.Annotations[AnnotationChartDigest] = lc.digest
	lc.chart.Metadata.Annotations[AnnotationRevision] = rev.Digest
	if lc.mirror != "" {
		lc.chart.Metadata.Annotations[AnnotationChartMirror] = lc.mirror
	} else {
		delete(lc.chart.Metadata.Annotations, AnnotationChartMirror)
	}
}

// installOrUpgrade installs the release in namespace ns when it has no
// revision or was uninstalled (install), or else upgrades it from last,
// labelled with the source, the app and the hash, and waits for it as the
// app says.
func installOrUpgrade(ctx context.Context, cfg *action.Configuration, ns string, rev state.Revision, app state.App, input *appInput, last *release.Release, log *slog.Logger) (rel *release.Release, install bool, err error) {
	h, lc, vals := app.Helm, input.chart, input.values
	name := h.ReleaseName
	labels := map[string]string{LabelSource: rev.Source, LabelApp: app.Name, LabelConfigHash: input.hash}
	description := "berth: revision " + rev.Digest
	install = last == nil || last.Info.Status == release.StatusUninstalled
	if install {
		in := action.NewInstall(cfg)
		in.ReleaseName, in.Namespace = name, ns
		in.Wait, in.Timeout = h.Wait, h.Timeout
		in.Labels, in.Description = labels, description
		in.Replace = last != nil // over an uninstalled release whose history was kept
		log.Info("helm: installing", "chart", lc.ref, "chartDigest", lc.digest, "wait", h.Wait, "timeout", h.Timeout)
		rel, err = in.RunWithContext(ctx, lc.chart, vals)
		return rel, install, err
	}
	up := action.NewUpgrade(cfg)
	up.Namespace = ns
	up.Wait, up.Timeout = h.Wait, h.Timeout
	up.MaxHistory = h.MaxHistory
	up.Labels, up.Description = labels, description
	up.ResetValues = true // the values are exactly these, never the last ones reused
	log.Info("helm: upgrading", "chart", lc.ref, "chartDigest", lc.digest, "from", last.Version, "wait", h.Wait, "timeout", h.Timeout)
	rel, err = up.RunWithContext(ctx, name, lc.chart, vals)
	return rel, install, err
}

// undo handles a failed install or upgrade (applyErr; rel is what it
// returned): it says in the error and in detail what was not ready, rolls
// the release back, and refreshes detail from the release as it is left.
// It returns whether the rollback failed, and the app's error.
func (a *Applier) undo(ctx context.Context, cfg *action.Configuration, h *state.Helm, install bool, deployed, rel *release.Release, applyErr error, detail *Detail, log *slog.Logger) (rbFailed bool, err error) {
	name := h.ReleaseName
	err = applyErr
	// Failure: say what was not ready, then roll the release back.
	var manifest string
	if rel != nil {
		manifest = rel.Manifest
	}
	if notReady := a.notReady(ctx, cfg, manifest); len(notReady) > 0 {
		detail.NotReady = notReady
		err = fmt.Errorf("%w within %s: %s (helm: %v)", ErrNotReady, h.Timeout, strings.Join(notReady, "; "), err)
	}
	log.Warn("helm: apply failed, rolling back", "err", err)
	rbMsg, rbErr := a.rollback(ctx, cfg, name, h, install, deployed)
	switch {
	case rbErr != nil:
		err = fmt.Errorf("%w; rollback failed: %v", err, rbErr)
	default:
		err = fmt.Errorf("%w; %s", err, rbMsg)
	}
	if cur, rerr := cfg.Releases.Last(name); rerr == nil {
		fillDetail(detail, cur)
	} else {
		detail.Revision, detail.Status = 0, ""
	}
	return rbErr != nil, err
}

// rollback brings the release back to the revision deployed before
// (deployed), or uninstalls it when it had none and this was its install.
// It returns what it did.
func (a *Applier) rollback(ctx context.Context, cfg *action.Configuration, name string, h *state.Helm, install bool, deployed *release.Release) (string, error) {
	_ = ctx // Helm's rollback and uninstall take no context: they are bounded by the timeout.
	switch {
	case deployed != nil:
		rb := action.NewRollback(cfg)
		rb.Version = deployed.Version
		rb.Wait, rb.Timeout = h.Wait, h.Timeout
		rb.MaxHistory = h.MaxHistory
		if err := rb.Run(name); err != nil {
			return "", fmt.Errorf("roll back to revision %d: %w", deployed.Version, err)
		}
		return fmt.Sprintf("rolled back to revision %d (%s)", deployed.Version, revisionOf(deployed)), nil
	case install:
		un := action.NewUninstall(cfg)
		un.Timeout = h.Timeout
		if _, err := un.Run(name); err != nil && !isNotFound(err) {
			return "", fmt.Errorf("uninstall the failed first install: %w", err)
		}
		return "the release had no deployed revision before: uninstalled", nil
	default:
		return "no deployed revision to roll back to: the release is left failed", nil
	}
}

// revisionOf names the berth revision that made a release revision.
func revisionOf(r *release.Release) string {
	if r.Chart != nil && r.Chart.Metadata != nil {
		if d := r.Chart.Metadata.Annotations[AnnotationRevision]; d != "" {
			return "berth revision " + d
		}
	}
	return "not made by berth"
}

// targetAfter is what the app is left on: rev's app when it applied, else
// (it was rolled back) what it was on before.
func (a *Applier) targetAfter(rev state.Revision, prev *state.Revision, app state.App, ok bool) *appTarget {
	if ok {
		return &appTarget{Rev: rev, App: app}
	}
	if t := a.state.Target(rev.Source, app.Name); t != nil {
		return t
	}
	if prevApp, found := hasApp(prev, app.Name); found {
		pr := *prev
		pr.Source = rev.Source
		return &appTarget{Rev: pr, App: prevApp}
	}
	return nil
}

// fillDetail copies what a release says about itself into d.
func fillDetail(d *Detail, r *release.Release) {
	if r == nil {
		return
	}
	d.Revision = r.Version
	if r.Info != nil {
		d.Status = r.Info.Status.String()
	}
	if r.Chart != nil && r.Chart.Metadata != nil {
		d.Chart, d.ChartVersion = r.Chart.Metadata.Name, r.Chart.Metadata.Version
		d.ChartDigest = r.Chart.Metadata.Annotations[AnnotationChartDigest]
		d.Mirror = r.Chart.Metadata.Annotations[AnnotationChartMirror]
	}
}

// latest returns the newest revision of a history.
func latest(hist []*release.Release) *release.Release {
	var out *release.Release
	for _, r := range hist {
		if out == nil || r.Version > out.Version {
			out = r
		}
	}
	return out
}

// latestDeployed returns the newest deployed revision of a history.
func latestDeployed(hist []*release.Release) *release.Release {
	var out *release.Release
	for _, r := range hist {
		if r.Info != nil && r.Info.Status == release.StatusDeployed && (out == nil || r.Version > out.Version) {
			out = r
		}
	}
	return out
}

// owner describes who owns a release, for errors.
func owner(r *release.Release) string {
	if r.Labels[LabelSource] == "" {
		return "no berth source (it was not installed by berth)"
	}
	return fmt.Sprintf("source %q, app %q", r.Labels[LabelSource], r.Labels[LabelApp])
}
