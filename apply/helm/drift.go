package helm

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/kube"
	"helm.sh/helm/v3/pkg/release"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/cli-runtime/pkg/resource"

	"github.com/berth-dev/berth/apply/internal/converge"
	"github.com/berth-dev/berth/state"
)

// Drift correction limits.
const (
	// defaultMaxRestores restores of one release within
	// defaultRestoreWindow make it flapping: it is then left alone until
	// the window has passed.
	defaultMaxRestores   = 5
	defaultRestoreWindow = 10 * time.Minute
	// DefaultDriftInterval is Watch's interval when given none.
	DefaultDriftInterval = time.Minute
	// maxReasonPaths bounds the changed fields named per object.
	maxReasonPaths = 5
)

// Helm's ownership metadata, which it sets on every object of a release.
const (
	helmManagedByLabel       = "app.kubernetes.io/managed-by"
	helmReleaseNameAnno      = "meta.helm.sh/release-name"
	helmReleaseNamespaceAnno = "meta.helm.sh/release-namespace"
)

// ApplyResult is the outcome of the last Apply of a release.
type ApplyResult struct {
	// Revision is the digest of the berth revision applied.
	Revision string    `json:"revision"`
	Outcome  string    `json:"outcome"`
	Message  string    `json:"message,omitempty"`
	Time     time.Time `json:"time"`
}

// DriftState is what drift correction found and did on one release, for
// status.
type DriftState struct {
	Source string `json:"source"`
	App    string `json:"app"`
	// LastCheck is when the release was last compared with the cluster.
	LastCheck time.Time `json:"lastCheck,omitzero"`
	// Drifted lists what differed at the last check that found drift:
	// objects deleted, or changed in fields the chart sets.
	Drifted []string `json:"drifted,omitempty"`
	// Restores counts the restores since the agent started.
	Restores int `json:"restores"`
	// LastRestore is when the release was last restored.
	LastRestore time.Time `json:"lastRestore,omitzero"`
	// LastError is the error of the last restore or check, empty if it
	// succeeded.
	LastError string `json:"lastError,omitempty"`
	// Flapping is set when the release needed more restores than allowed
	// within the window: it is not restored again until the window passes.
	Flapping bool `json:"flapping"`
}

// appTarget is what a release was last converged to by this Applier: an
// app of a revision.
type appTarget = converge.Target

// resultEntry is the last apply result of a release, with its app.
type resultEntry struct {
	res    ApplyResult
	source string
	app    state.App
}

// setResult records the outcome of an apply of a release.
func (a *Applier) setResult(key string, rev state.Revision, app state.App, outcome, msg string) {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	a.results[key] = resultEntry{
		res:    ApplyResult{Revision: rev.Digest, Outcome: outcome, Message: msg, Time: time.Now().UTC()},
		source: rev.Source,
		app:    app,
	}
}

// forget drops what is recorded about a release that was uninstalled.
func (a *Applier) forget(key string) {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	delete(a.results, key)
	delete(a.drift, key)
	a.limit.Forget(key)
}

// Drift returns the drift records so far, by release key
// ("namespace/name").
func (a *Applier) Drift() map[string]DriftState {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	now := time.Now()
	out := make(map[string]DriftState, len(a.drift))
	for k, r := range a.drift {
		st := *r
		st.Drifted = slices.Clone(st.Drifted)
		st.Flapping = st.Flapping && a.limit.Saturated(k, now)
		out[k] = st
	}
	return out
}

// record returns the drift record of a release, made on first use.
// stateMu is held.
func (a *Applier) record(key string, t appTarget) *DriftState {
	r, ok := a.drift[key]
	if !ok {
		r = &DriftState{Source: t.Rev.Source, App: t.App.Name}
		a.drift[key] = r
	}
	return r
}

// checked records a check of a release that found drifted (nil: none) or
// failed with err.
func (a *Applier) checked(key string, t appTarget, drifted []string, err error) {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	r := a.record(key, t)
	r.LastCheck = time.Now().UTC()
	if len(drifted) > 0 {
		r.Drifted = drifted
	}
	if err != nil {
		r.LastError = err.Error()
	}
}

// allowRestore says whether the release may be restored now, and counts
// the restore.
func (a *Applier) allowRestore(key string, t appTarget, reason string) bool {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	r := a.record(key, t)
	now := time.Now()
	if ok, restores, until := a.limit.Allow(key, now); !ok {
		if !r.Flapping {
			r.Flapping = true
			a.log.Warn("helm: release is flapping: not restoring it any more until the window passes",
				"source", t.Rev.Source, "app", t.App.Name, "release", key, "reason", reason,
				"restores", restores, "window", a.limit.Window, "until", until)
		}
		return false
	}
	r.Flapping = false
	r.Restores++
	r.LastRestore = now.UTC()
	return true
}

func (a *Applier) restoreDone(key string, err error) {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	if r, ok := a.drift[key]; ok {
		r.LastError = ""
		if err != nil {
			r.LastError = err.Error()
		}
	}
}

// Watch keeps the releases of the applied revisions as their deployed
// revision says until ctx is done. applied returns the revision applied on
// every source. Every interval (default DefaultDriftInterval, and once at
// the start) it compares each release's objects (from the manifest of its
// deployed Helm revision, with Helm's ownership metadata) with the live
// ones: an object deleted, or whose live state differs in a field the
// chart sets, is drift. Fields the chart does not set (defaults, what
// controllers write, status) are not compared. A drifted release is
// restored the way Helm upgrades: deleted objects are created again, and
// the changed fields are patched back (a three-way patch of the manifest
// against the live object, that leaves the other fields alone). A release
// that is gone altogether is installed again from the revision's app. A
// source that an Apply is converging is left alone until the next
// interval. A release restored more than 5 times in 10 minutes is flapping:
// Watch logs it and leaves it alone until the window has passed. Checks
// only read; only restores write. Report lists the releases of the
// revisions applied returns, even those no Apply of this Applier touched.
// Watch returns ctx's error.
func (a *Applier) Watch(ctx context.Context, applied func() []state.Revision, interval time.Duration) error {
	if interval <= 0 {
		interval = DefaultDriftInterval
	}
	a.stateMu.Lock()
	a.applied = applied
	a.stateMu.Unlock()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		a.checkAll(ctx, applied)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

// checkAll checks the releases of every applied revision once, skipping
// the sources an Apply holds.
func (a *Applier) checkAll(ctx context.Context, applied func() []state.Revision) {
	for _, rev := range applied() {
		if ctx.Err() != nil {
			return
		}
		mu := a.state.Lock(rev.Source)
		if !mu.TryLock() {
			continue
		}
		for _, t := range a.state.TargetsOf(rev, isHelm) {
			if ctx.Err() != nil {
				break
			}
			a.checkRelease(ctx, t)
		}
		mu.Unlock()
	}
}

// checkRelease restores the release of t when it drifted. The source's
// lock is held.
func (a *Applier) checkRelease(ctx context.Context, t appTarget) {
	h := t.App.Helm
	ns, name := a.namespace(h), h.ReleaseName
	key := releaseKey(ns, name)
	log := a.log.With("source", t.Rev.Source, "app", t.App.Name, "release", key)
	cfg, _, err := a.actionConfig(ns, h.MaxHistory)
	if err != nil {
		log.Warn("helm: drift check failed", "err", err)
		return
	}
	hist, err := cfg.Releases.History(name)
	if err != nil && !isNotFound(err) {
		log.Warn("helm: drift check: cannot read the release", "err", err)
		a.checked(key, t, nil, err)
		return
	}
	if len(hist) == 0 {
		// Uninstalled by hand: install it again.
		reason := "release " + key + " was uninstalled"
		a.checked(key, t, []string{reason}, nil)
		if !a.allowRestore(key, t, reason) {
			return
		}
		log.Info("helm: restoring drifted release", "reason", reason)
		_, _, err := a.applyApp(ctx, t.Rev, nil, t.App)
		a.restoreDone(key, err)
		if err != nil {
			log.Warn("helm: restoring drifted release failed", "reason", reason, "err", err)
		}
		return
	}
	last := latest(hist)
	if last.Labels[LabelSource] != t.Rev.Source || last.Labels[LabelApp] != t.App.Name {
		return // not ours: Apply reports it
	}
	rel := latestDeployed(hist)
	if rel == nil || last.Info.Status.IsPending() {
		return // failed or in progress: Apply's business
	}
	resources, drifted, err := a.driftOf(ctx, cfg, rel)
	a.checked(key, t, drifted, err)
	if err != nil {
		log.Warn("helm: drift check failed", "err", err)
		return
	}
	if len(drifted) == 0 {
		return
	}
	reason := strings.Join(drifted, "; ")
	if !a.allowRestore(key, t, reason) {
		return
	}
	log.Info("helm: restoring drifted release", "helmRevision", rel.Version, "drifted", reason)
	_, err = cfg.KubeClient.Update(resources, resources, false)
	if err != nil {
		err = fmt.Errorf("restore release %s revision %d: %w", key, rel.Version, err)
	}
	a.restoreDone(key, err)
	if err != nil {
		log.Warn("helm: restoring drifted release failed", "err", err)
		return
	}
	log.Info("helm: restored drifted release", "helmRevision", rel.Version)
}

// driftOf compares the objects of a release revision with the live ones.
// It returns the objects (with Helm's ownership metadata, ready for
// KubeClient.Update) and what drifted, one entry per object.
func (a *Applier) driftOf(ctx context.Context, cfg *action.Configuration, rel *release.Release) (kube.ResourceList, []string, error) {
	_ = ctx // resource helpers take no context
	resources, err := cfg.KubeClient.Build(strings.NewReader(rel.Manifest), false)
	if err != nil {
		return nil, nil, fmt.Errorf("read the manifest of revision %d: %w", rel.Version, err)
	}
	if err := resources.Visit(ownershipVisitor(rel.Name, rel.Namespace)); err != nil {
		return nil, nil, err
	}
	var drifted []string
	for _, info := range resources {
		live, err := resource.NewHelper(info.Client, info.Mapping).Get(info.Namespace, info.Name)
		if apierrors.IsNotFound(err) {
			drifted = append(drifted, objectName(info)+" was deleted")
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("get %s: %w", objectName(info), err)
		}
		paths := changedFields(canonical(info.Object), canonical(live))
		if len(paths) > maxReasonPaths {
			paths = append(paths[:maxReasonPaths], fmt.Sprintf("and %d more", len(paths)-maxReasonPaths))
		}
		if len(paths) > 0 {
			drifted = append(drifted, fmt.Sprintf("%s was changed (%s)", objectName(info), strings.Join(paths, ", ")))
		}
	}
	return resources, drifted, nil
}

// ownershipVisitor sets the metadata Helm puts on every object of a
// release, as its install and upgrade do.
func ownershipVisitor(name, namespace string) resource.VisitorFunc {
	return func(info *resource.Info, err error) error {
		if err != nil {
			return err
		}
		acc, err := meta.Accessor(info.Object)
		if err != nil {
			return fmt.Errorf("%s: %w", objectName(info), err)
		}
		labels := acc.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[helmManagedByLabel] = "Helm"
		acc.SetLabels(labels)
		ann := acc.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann[helmReleaseNameAnno] = name
		ann[helmReleaseNamespaceAnno] = namespace
		acc.SetAnnotations(ann)
		return nil
	}
}
