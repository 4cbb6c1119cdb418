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
	"sync"
	"time"

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
