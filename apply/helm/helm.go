// Package helm applies the Helm apps of a revision with the Helm v3 SDK
// against a Kubernetes API server: installed or upgraded only when
// something changed, waited for, rolled back on failure, pruned, and kept
// free of drift.
//
// Every app of the desired state with `helm:` (and every extension the
// device enables that has one) is one Helm release, named by its
// releaseName (the app name by default) in its namespace (Options.Namespace
// by default), which is created when missing. Release records are Helm's
// usual Secrets in that namespace, so the helm CLI sees what berth did.
//
// The chart comes from a folder of the extracted revision (path:), read
// through an os.Root so that nothing outside the revision is reached, or
// from an OCI registry (chart: oci://…, version:) by the digest the lock
// step wrote into berth.yaml at push time: the manifest is fetched by that
// digest through the registry mirrors of Options.Mirrors, verified, and
// the chart layer (application/vnd.cncf.helm.chart.content.v1.tar+gzip)
// streamed through a size-capped, digest-verifying reader before Helm
// parses it. A chart without a digest, or whose digest no registry serves,
// is refused. The values are the app's valuesFiles (in the revision), then
// its inline values, then the device-local <ValuesDir>/<app>.yaml, merged
// as Helm merges -f files.
//
// Apply converges the apps in order. Each release carries the labels
// LabelSource, LabelApp and LabelConfigHash (the hash of the chart digest
// and the effective values, see configHash): when the deployed revision of
// the release has the hash the app produces, nothing is sent to the API
// server. Otherwise the release is installed or upgraded; with wait (the
// default) it must become ready within the app's timeout, as `helm
// --wait` judges it. When it fails, the objects that were not ready are
// named in the error and the release is rolled back to the Helm revision
// that was deployed before (a first install is uninstalled). Apps of the
// same revision that succeeded stay applied: a failure is contained to its
// app. When every app succeeded, the releases of the source that the
// revision no longer lists are uninstalled ("pruned"); a failed revision
// removes nothing, and Apply only ever sees verified revisions, so an
// outage or a refused artifact never prunes.
//
// Watch (drift.go) compares, every interval, the objects of each release's
// deployed manifest with the live ones and restores what was changed or
// deleted by hand.
package helm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"

	"github.com/berth-dev/berth/apply/internal/converge"
	"github.com/berth-dev/berth/source/mirror"
	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/state"
)

// Labels berth sets on the releases it manages (Helm release labels, kept
// on the release's Secrets).
const (
	// LabelSource names the source whose revision made the release.
	LabelSource = "berth.dev/source"
	// LabelApp names the app of the desired state.
	LabelApp = "berth.dev/app"
	// LabelConfigHash is the hash of the chart and values the release was
	// made from (see configHash).
	LabelConfigHash = "berth.dev/config-hash"
)

// Annotations berth adds to the chart metadata stored with each release
// (too long for label values): the release records what it came from.
const (
	// AnnotationChartDigest is the chart's digest (see loadedChart).
	AnnotationChartDigest = "berth.dev/chart-digest"
	// AnnotationChartMirror is the registry mirror that served an OCI
	// chart; absent when it came from its own registry or the revision.
	AnnotationChartMirror = "berth.dev/chart-mirror"
	// AnnotationRevision is the digest of the revision that made the
	// release revision.
	AnnotationRevision = "berth.dev/revision"
)

// Defaults of Options.
const (
	// DefaultKubeconfig is the kubeconfig used when neither
	// Options.Kubeconfig nor $KUBECONFIG is set: k3s's.
	DefaultKubeconfig = "/etc/rancher/k3s/k3s.yaml"
	DefaultNamespace  = "default"
	DefaultValuesDir  = "/etc/berth/values"
	// DefaultPullTimeout bounds the pull of one chart from one registry
	// (a chart is at most MaxChartSize).
	DefaultPullTimeout = 5 * time.Minute
)

// Outcomes reported in state.AppStatus.Outcome.
const (
	OutcomeApplied = "applied"
	OutcomeFailed  = "failed"
	OutcomePruned  = "pruned"
)

const kind = "helm"

// fieldManager names berth in the managedFields of the objects it writes
// itself (namespaces).
const fieldManager = "berth"

// pendingGrace is how long a release may stay pending (another Helm client
// at work) before Apply takes it for abandoned, beyond its timeout.
const pendingGrace = 2 * time.Minute

// Options configure the Helm applier.
type Options struct {
	// Kubeconfig is the cluster's kubeconfig. Default $KUBECONFIG, else
	// DefaultKubeconfig. It is read on first use, not by New.
	Kubeconfig string
	// Namespace is the namespace of the releases whose app sets none.
	// Default DefaultNamespace.
	Namespace string
	// ValuesDir holds the device-local values files, <ValuesDir>/<app>.yaml.
	// Default DefaultValuesDir.
	ValuesDir string
	// DockerConfig is a Docker config.json with the credentials for chart
	// registries. Empty: Docker's default location.
	DockerConfig string
	// CAFile is a PEM bundle trusted, besides the system roots, by the
	// registries charts are pulled from.
	CAFile string
	// PlainHTTP talks plain HTTP to the chart registries.
	PlainHTTP bool
	// Mirrors are the registry mirrors charts are pulled through (the
	// agent configuration's registries:; see package mirror). nil: every
	// chart comes from its own registry.
	Mirrors *mirror.Resolver
	// PullTimeout bounds the pull of one chart from one registry. Default
	// DefaultPullTimeout.
	PullTimeout time.Duration
	// Log receives what the applier does; nil discards it.
	Log *slog.Logger
}

// Applier applies the Helm apps of revisions. It implements the agent's
// Applier, Watcher and Reporter (package reconcile, which checks it); one
// Applier serves every source of the agent.
type Applier struct {
	opts Options
	log  *slog.Logger
	// mirrors is Options.Mirrors.
	mirrors *mirror.Resolver

	kubeMu sync.Mutex
	kube   *kubeConn // nil until first used

	ociMu sync.Mutex
	oci   *oci.Client // nil until first used

	// state holds the per-source locks and what each app was left on.
	state converge.State

	// state for drift and status, see drift.go
	stateMu sync.Mutex
	applied func() []state.Revision // the last Watch's, nil before any
	results map[string]resultEntry  // by release key
	drift   map[string]*DriftState  // by release key
	limit   converge.Limiter        // restores by release key; stateMu
}

// New makes a Helm applier. The cluster is reached lazily: a kubeconfig
// that does not exist yet, or an API server that is not up, fails the
// first Apply, not New.
func New(o Options) (*Applier, error) {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.ValuesDir == "" {
		o.ValuesDir = DefaultValuesDir
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.PullTimeout <= 0 {
		o.PullTimeout = DefaultPullTimeout
	}
	return &Applier{
		opts:    o,
		log:     log,
		mirrors: o.Mirrors,
		results: map[string]resultEntry{},
		drift:   map[string]*DriftState{},
		limit:   converge.Limiter{Max: defaultMaxRestores, Window: defaultRestoreWindow},
	}, nil
}

// Kind returns "helm".
func (a *Applier) Kind() string { return kind }

// Detail is the state.AppStatus.Detail of a Helm app: the release as it
// stands after the apply.
type Detail struct {
	Release   string `json:"release"`
	Namespace string `json:"namespace"`
	// Chart and ChartVersion are the chart's name and version.
	Chart        string `json:"chart,omitempty"`
	ChartVersion string `json:"chartVersion,omitempty"`
	// ChartDigest is the OCI manifest digest of the chart, or the hash of
	// the files of a chart folder.
	ChartDigest string `json:"chartDigest,omitempty"`
	// Mirror is the registry mirror that served the chart; empty when it
	// came from its own registry or from the revision.
	Mirror string `json:"mirror,omitempty"`
	// Revision is the Helm revision of the release, Status its Helm status
	// (deployed, failed, ...); both empty when there is no release.
	Revision int    `json:"revision,omitempty"`
	Status   string `json:"status,omitempty"`
	// NotReady lists the objects that were not ready when the wait gave
	// up, as "Kind namespace/name: why".
	NotReady []string `json:"notReady,omitempty"`
}

// isHelm reports whether app is deployed with Helm.
func isHelm(app state.App) bool { return app.Helm != nil }

// desiredApps lists the Helm apps of rev: its apps, then the extensions it
// enables, in file order.
func desiredApps(rev state.Revision) []state.App { return rev.Apps(isHelm) }

// hasApp returns the Helm app name of rev, if rev deploys it.
func hasApp(rev *state.Revision, name string) (state.App, bool) {
	return rev.App(name, isHelm)
}

// namespace is the namespace of an app's release.
func (a *Applier) namespace(h *state.Helm) string {
	if h.Namespace != "" {
		return h.Namespace
	}
	return a.opts.Namespace
}

// releaseKey identifies a release: "namespace/name".
func releaseKey(namespace, name string) string { return namespace + "/" + name }

// Apply converges the Helm apps of rev (see the package documentation),
// and, when every app succeeded, uninstalls the releases of rev.Source
// whose app rev no longer lists. It returns one status per app, and an
// error joining the apps' errors.
func (a *Applier) Apply(ctx context.Context, rev state.Revision, prev *state.Revision) ([]state.AppStatus, error) {
	sts, err := a.apply(ctx, rev, prev)
	for i := range sts {
		var d Detail
		if len(sts[i].Detail) > 0 && json.Unmarshal(sts[i].Detail, &d) == nil {
			sts[i].View = view(d)
		}
	}
	return sts, err
}

// apply is Apply without the shared view of each status.
func (a *Applier) apply(ctx context.Context, rev state.Revision, prev *state.Revision) ([]state.AppStatus, error) {
	mu := a.state.Lock(rev.Source)
	mu.Lock()
	defer mu.Unlock()

	apps := desiredApps(rev)
	if len(apps) == 0 && (prev == nil || len(desiredApps(*prev)) == 0) && !a.state.Known(rev.Source) {
		// No Helm app now or before: the cluster is not even reached (it
		// may not run on a Compose-only device).
		a.state.SetTargets(rev.Source, map[string]appTarget{})
		return nil, nil
	}
	var statuses []state.AppStatus
	var errs []error
	applied := map[string]appTarget{}
	for _, app := range apps {
		st, target, err := a.applyApp(ctx, rev, prev, app)
		statuses = append(statuses, st)
		if err != nil {
			errs = append(errs, err)
		}
		if target != nil {
			applied[app.Name] = *target
		}
	}
	a.state.SetTargets(rev.Source, applied)

	existing, err := a.listReleases(ctx, rev.Source)
	if err != nil {
		errs = append(errs, fmt.Errorf("list the releases of source %s to prune: %w", rev.Source, err))
		return statuses, errors.Join(errs...)
	}
	candidates := pruneCandidates(existing, a.desiredKeys(rev))
	if len(errs) > 0 {
		if len(candidates) > 0 {
			a.log.Warn("helm: not pruning while apps of the revision failed", "source", rev.Source, "revision", rev.Digest, "releases", len(candidates))
		}
		return statuses, errors.Join(errs...)
	}
	for _, r := range candidates {
		st, err := a.prune(ctx, r)
		statuses = append(statuses, st)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return statuses, errors.Join(errs...)
}

// desiredKeys returns the release keys rev deploys.
func (a *Applier) desiredKeys(rev state.Revision) map[string]bool {
	m := map[string]bool{}
	for _, app := range desiredApps(rev) {
		m[releaseKey(a.namespace(app.Helm), app.Helm.ReleaseName)] = true
	}
	return m
}

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

// releaseInfo is a release of a source found on the cluster.
type releaseInfo struct {
	namespace, name string
	source, app     string
	status          release.Status
}

func (r releaseInfo) key() string { return releaseKey(r.namespace, r.name) }

// listReleases finds the releases of source in every namespace (their
// newest revisions), by the LabelSource of their records.
func (a *Applier) listReleases(ctx context.Context, source string) (map[string]releaseInfo, error) {
	kc, err := a.conn()
	if err != nil {
		return nil, err
	}
	_ = ctx // Helm's storage drivers take no context.
	d := driver.NewSecrets(kc.clientset.CoreV1().Secrets(""))
	d.Log = func(format string, v ...any) { a.log.Debug("helm: " + fmt.Sprintf(format, v...)) }
	rels, err := d.Query(map[string]string{"owner": "helm", LabelSource: source})
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("list the Helm releases on %s: %w", kc.config.Host, err)
	}
	newest := map[string]*release.Release{}
	for _, r := range rels {
		k := releaseKey(r.Namespace, r.Name)
		if cur, ok := newest[k]; !ok || r.Version > cur.Version {
			newest[k] = r
		}
	}
	out := map[string]releaseInfo{}
	for k, r := range newest {
		st := release.StatusUnknown
		if r.Info != nil {
			st = r.Info.Status
		}
		if st == release.StatusUninstalled {
			continue
		}
		out[k] = releaseInfo{namespace: r.Namespace, name: r.Name, source: r.Labels[LabelSource], app: r.Labels[LabelApp], status: st}
	}
	return out, nil
}

// pruneCandidates lists the releases that are not among want, sorted.
func pruneCandidates(existing map[string]releaseInfo, want map[string]bool) []releaseInfo {
	var out []releaseInfo
	for _, k := range slices.Sorted(maps.Keys(existing)) {
		if !want[k] {
			out = append(out, existing[k])
		}
	}
	return out
}

// prune uninstalls a release its source no longer deploys.
func (a *Applier) prune(ctx context.Context, r releaseInfo) (state.AppStatus, error) {
	_ = ctx // Helm's uninstall takes no context: it is bounded by its timeout.
	status := state.AppStatus{Name: r.app, Kind: kind}
	detail, _ := json.Marshal(Detail{Release: r.name, Namespace: r.namespace})
	status.Detail = detail
	cfg, _, err := a.actionConfig(r.namespace, 0)
	if err == nil {
		un := action.NewUninstall(cfg)
		un.Timeout = state.DefaultTimeout
		if _, err = un.Run(r.name); isNotFound(err) {
			err = nil
		}
	}
	if err != nil {
		err = fmt.Errorf("prune app %q (release %s): %w", r.app, r.key(), err)
		status.Outcome, status.Message = OutcomeFailed, err.Error()
		a.log.Error("helm: prune failed", "source", r.source, "app", r.app, "release", r.key(), "err", err)
		return status, err
	}
	status.Outcome = OutcomePruned
	status.Message = fmt.Sprintf("uninstalled release %s: the revision no longer lists the app", r.key())
	a.forget(r.key())
	a.log.Info("helm: pruned", "source", r.source, "app", r.app, "release", r.key())
	return status, nil
}
