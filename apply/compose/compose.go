// Package compose applies the Compose apps of a revision with the Compose
// SDK against a Docker Engine: health-gated, rolled back on failure, pruned,
// and kept free of drift.
//
// Every app of the desired state with `compose:` (and every extension the
// device enables that has one) is one Compose project named
// berth-<source>-<app> (see ProjectName), loaded with compose-go from the
// app's folder in the extracted revision. The interpolation environment
// is the app's state.Compose.Env (values its source gives, such as the
// parameters of a Margo deployment) with the device-local env file
// <EnvDir>/<app>.env over it, when it exists: nothing comes from the
// agent's own environment, and no .env file is ever read from the
// artifact.
//
// Apply converges the apps in order. For each app it makes sure the images
// are present (pulling the pinned references that are missing, through the
// registry mirrors of Options.Mirrors, see ensureImages and pull),
// runs the equivalent of `docker compose up -d --remove-orphans` (containers
// whose configuration diverged are recreated, the others are left alone),
// then waits until every container runs and, where it has a healthcheck, is
// healthy, within the app's own timeout when its source gives one
// (state.Compose.Timeout, a Margo component's), else WaitTimeout; an app
// with NoWait (a Margo component with wait: false) is applied once started,
// unless a container already exited or is unhealthy. When up or the wait fails, the app is rolled back: to the
// previous revision's project when that revision had the app, or brought
// down when it did not; the error names the app, the failing service, its
// state and health and the last lines of its log. Apps of the same revision
// that succeeded stay applied and are reported "applied": a failure is
// contained to its app. Apps that a successful revision no longer lists are
// then brought down ("pruned"); pruning is skipped when any app failed, so
// that a failed revision removes nothing.
//
// Containers carry the Compose CLI's labels and berth's: LabelSource,
// LabelApp, LabelRevision (the revision that created the container) and
// LabelConfigHash (see Applier.Apply). Watch (drift.go) keeps the applied
// projects running between reconciles.
package compose

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/docker/compose/v5/pkg/api"
	"github.com/moby/moby/client"
	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/berth-dev/berth/apply/internal/converge"
	"github.com/berth-dev/berth/source/mirror"
	"github.com/berth-dev/berth/state"
)

// Labels berth sets on the containers, networks and volumes it manages.
const (
	// LabelSource names the source whose revision created the resource.
	LabelSource = "dev.berth.source"
	// LabelApp names the app of the desired state.
	LabelApp = "dev.berth.app"
	// LabelRevision is the digest of the revision that created the
	// container. It is not part of any hash: a new revision that leaves an
	// app's configuration unchanged does not recreate its containers, which
	// then keep the digest of the revision that created them.
	LabelRevision = "dev.berth.revision"
	// LabelConfigHash is the hash of the effective configuration of the
	// container's service (see Applier.Apply).
	LabelConfigHash = "dev.berth.config-hash"
	// LabelImageMirror is the registry mirror that served the image the
	// container was created from (see Options.Mirrors); absent when the
	// image came from its own registry. It is not part of any hash.
	LabelImageMirror = "dev.berth.image-mirror"
)

// Defaults of Options.
const (
	DefaultHost        = "unix:///var/run/docker.sock"
	DefaultWaitTimeout = 2 * time.Minute
	DefaultEnvDir      = "/etc/berth/env"
	// DefaultPullTimeout bounds the pull of one image from one registry:
	// long enough for a large image over a slow link, short enough that a
	// registry that stalls does not hold the device forever.
	DefaultPullTimeout = 15 * time.Minute
)

// Outcomes reported in state.AppStatus.Outcome.
const (
	OutcomeApplied = "applied"
	OutcomeFailed  = "failed"
	OutcomePruned  = "pruned"
)

const kind = "compose"

// Options configure the Compose applier.
type Options struct {
	// Host is the Docker Engine: unix:///path or tcp://host:port. Default
	// $DOCKER_HOST, else DefaultHost.
	Host string
	// WaitTimeout bounds the wait for an app's containers to run and be
	// healthy. Default DefaultWaitTimeout.
	WaitTimeout time.Duration
	// EnvDir holds the device-local env files, <EnvDir>/<app>.env. Default
	// DefaultEnvDir.
	EnvDir string
	// DockerConfig is a Docker config.json with the credentials (auths,
	// credHelpers, credsStore) for image pulls. Empty: Docker's default
	// location ($DOCKER_CONFIG/config.json, else ~/.docker/config.json).
	DockerConfig string
	// Mirrors are the registry mirrors images are pulled through (the
	// agent configuration's registries:; see package mirror). An image is
	// pulled from the first endpoint that serves it, and the service then
	// runs the reference that was pulled (the mirror's, same digest); the
	// configuration hash is always that of the reference written in the
	// compose file. nil: every image comes from its own registry.
	Mirrors *mirror.Resolver
	// PullTimeout bounds the pull of one image from one endpoint. Default
	// DefaultPullTimeout.
	PullTimeout time.Duration
	// Log receives what the applier does; nil discards it.
	Log *slog.Logger
}

// Applier applies the Compose apps of revisions. It implements
// the agent's Applier (package reconcile, which checks it); one Applier
// serves every source of the agent.
type Applier struct {
	opts   Options
	log    *slog.Logger
	docker client.APIClient
	svc    api.Compose
	// mirrors is Options.Mirrors.
	mirrors *mirror.Resolver

	credsOnce sync.Once
	creds     credentials.Store
	credsErr  error

	// state holds the per-source locks and what each app was left on.
	state converge.State

	// drift state, see drift.go
	driftMu      sync.Mutex
	drift        map[string]*DriftState // by project
	limit        converge.Limiter       // restores by project; driftMu
	debounce     time.Duration
	pollInterval time.Duration
}

// New connects to the Docker Engine (lazily: an engine that is not up yet
// fails the first Apply, not New) and creates the Compose service.
func New(ctx context.Context, o Options) (*Applier, error) {
	if o.Host == "" {
		o.Host = os.Getenv("DOCKER_HOST")
	}
	if o.Host == "" {
		o.Host = DefaultHost
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = DefaultWaitTimeout
	}
	if o.EnvDir == "" {
		o.EnvDir = DefaultEnvDir
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.PullTimeout <= 0 {
		o.PullTimeout = DefaultPullTimeout
	}
	// The client negotiates the API version with the engine on its first
	// request (Debian's 20.10 speaks 1.41).
	dc, err := client.New(client.WithTLSClientConfigFromEnv(), client.WithHost(o.Host), client.WithUserAgent("berth"))
	if err != nil {
		return nil, fmt.Errorf("docker engine %s: %w (set apply.compose.host to unix:///path or tcp://host:port)", o.Host, err)
	}
	svc, err := newComposeService(dc, o.Host, log)
	if err != nil {
		dc.Close()
		return nil, err
	}
	a := &Applier{
		opts:         o,
		log:          log,
		docker:       dc,
		svc:          svc,
		mirrors:      o.Mirrors,
		drift:        map[string]*DriftState{},
		limit:        converge.Limiter{Max: defaultMaxRestores, Window: defaultRestoreWindow},
		debounce:     defaultDebounce,
		pollInterval: 500 * time.Millisecond,
	}
	_ = ctx // the engine is reached lazily, by Apply and Watch
	return a, nil
}

// Close releases the connection to the engine.
func (a *Applier) Close() error {
	return a.docker.Close()
}

// Kind returns "compose".
func (a *Applier) Kind() string { return kind }

// Apply converges the Compose apps of rev, rolls back each app that fails,
// and, when every app succeeded, brings down the projects of rev.Source
// whose app rev no longer lists. It returns one status per app, and an
// error joining the apps' errors.
//
// Each container carries LabelConfigHash: the sha256 of its service's
// effective configuration (the service as compose-go loaded and
// interpolated it, with the revision folder abstracted away, and the
// content of the app's env file), never of the revision digest. The label
// is part of the service's labels, hence of Compose's own configuration
// hash: a container is recreated whenever its LabelConfigHash changes (and
// when its image changes), and a new revision with the same app
// configuration recreates nothing.
func (a *Applier) Apply(ctx context.Context, rev state.Revision, prev *state.Revision) ([]state.AppStatus, error) {
	sts, err := a.apply(ctx, rev, prev)
	for i := range sts {
		sts[i].View = view(sts[i].Detail)
	}
	return sts, err
}

// apply is Apply without the shared view of each status.
func (a *Applier) apply(ctx context.Context, rev state.Revision, prev *state.Revision) ([]state.AppStatus, error) {
	mu := a.state.Lock(rev.Source)
	mu.Lock()
	defer mu.Unlock()

	existing, err := a.listProjects(ctx, "")
	if err != nil {
		return nil, err
	}
	var statuses []state.AppStatus
	var errs []error
	applied := map[string]appTarget{}
	for _, app := range desiredApps(rev) {
		st, target, err := a.applyApp(ctx, rev, prev, app, existing)
		statuses = append(statuses, st)
		if err != nil {
			errs = append(errs, err)
		}
		if target != nil {
			applied[app.Name] = *target
		}
	}
	a.state.SetTargets(rev.Source, applied)
	if len(errs) > 0 {
		if n := len(pruneCandidates(existing, rev)); n > 0 {
			a.log.Warn("compose: not pruning while apps of the revision failed", "source", rev.Source, "revision", rev.Digest, "projects", n)
		}
		return statuses, errors.Join(errs...)
	}
	for _, p := range pruneCandidates(existing, rev) {
		st, err := a.prune(ctx, p, prev)
		statuses = append(statuses, st)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return statuses, errors.Join(errs...)
}

// isCompose reports whether app is deployed with Compose.
func isCompose(app state.App) bool { return app.Compose != nil }

// desiredApps lists the Compose apps of rev: its apps, then the extensions
// it enables, in file order.
func desiredApps(rev state.Revision) []state.App { return rev.Apps(isCompose) }

func desiredNames(rev state.Revision) map[string]bool {
	m := map[string]bool{}
	for _, app := range desiredApps(rev) {
		m[app.Name] = true
	}
	return m
}

// findApp returns the app or extension named name of rev's state, whether
// enabled or not.
func findApp(rev *state.Revision, name string) (state.App, bool) {
	if rev == nil || rev.State == nil {
		return state.App{}, false
	}
	for _, list := range [][]state.App{rev.State.Apps, rev.State.Extensions} {
		for _, app := range list {
			if app.Name == name && app.Compose != nil {
				return app, true
			}
		}
	}
	return state.App{}, false
}

// hasApp reports whether rev deploys the Compose app name.
func hasApp(rev *state.Revision, name string) (state.App, bool) {
	return rev.App(name, isCompose)
}

// applyApp converges one app and rolls it back on failure. It returns the
// app's status, what the project is left on (nil when it is down), and the
// error of the app.
func (a *Applier) applyApp(ctx context.Context, rev state.Revision, prev *state.Revision, app state.App, existing map[string]projectInfo) (state.AppStatus, *appTarget, error) {
	name := ProjectName(rev.Source, app.Name)
	log := a.log.With("source", rev.Source, "app", app.Name, "project", name, "revision", rev.Digest)
	status := state.AppStatus{Name: app.Name, Kind: kind}
	fail := func(err error) (state.AppStatus, *appTarget, error) {
		err = fmt.Errorf("app %q (project %s): %w", app.Name, name, err)
		status.Outcome = OutcomeFailed
		status.Message = err.Error()
		status.Detail = a.detail(ctx, name)
		log.Error("compose: apply failed", "err", err)
		return status, a.state.Target(rev.Source, app.Name), err
	}
	if p, ok := existing[name]; ok && (p.source != rev.Source || p.app != app.Name) {
		err := fmt.Errorf("app %q (project %s): a project of that name already exists and belongs to %s: rename the source or the app", app.Name, name, p.owner())
		status.Outcome = OutcomeFailed
		status.Message = err.Error()
		status.Detail, _ = json.Marshal(Detail{Project: name, Services: []ServiceStatus{}})
		log.Error("compose: apply refused", "err", err)
		return status, nil, err
	}
	ap, err := a.load(ctx, rev, app)
	if err != nil {
		// Nothing was changed: what runs keeps running.
		return fail(err)
	}
	if err := a.ensureImages(ctx, ap.project); err != nil {
		return fail(err)
	}
	start := time.Now()
	err = a.up(ctx, ap, nil, a.waitTimeout(app))
	if err == nil {
		err = a.settle(ctx, ap.project, app)
	}
	if err == nil {
		log.Info("compose: applied", "took", time.Since(start).Round(time.Millisecond))
		status.Outcome = OutcomeApplied
		status.Detail = a.detail(ctx, name)
		return status, &appTarget{Rev: rev, App: app}, nil
	}

	// Failure: describe it, then roll the app back.
	err = a.describeFailure(ctx, ap.project, err)
	log.Warn("compose: apply failed, rolling back", "err", err)
	target, rbErr := a.rollback(ctx, rev, prev, app, name)
	switch {
	case rbErr != nil:
		err = fmt.Errorf("%w; rollback failed: %v", err, rbErr)
	case target != nil:
		err = fmt.Errorf("%w; rolled back to revision %s", err, target.Rev.Digest)
	default:
		err = fmt.Errorf("%w; the previous revision did not have the app: brought it down", err)
	}
	err = fmt.Errorf("app %q (project %s): %w", app.Name, name, err)
	status.Outcome = OutcomeFailed
	status.Message = err.Error()
	status.Detail = a.detail(ctx, name)
	log.Error("compose: apply failed", "err", err)
	if rbErr != nil {
		return status, a.state.Target(rev.Source, app.Name), err
	}
	return status, target, err
}

// rollback brings the project of app back to prev's version of it, or down
// when prev did not deploy the app. It returns what the project is left on.
func (a *Applier) rollback(ctx context.Context, rev state.Revision, prev *state.Revision, app state.App, name string) (*appTarget, error) {
	// The rollback runs even if ctx was cancelled during the failed apply,
	// bounded on its own.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(a.opts.WaitTimeout, a.waitTimeout(app))+2*time.Minute)
	defer cancel()
	prevApp, ok := hasApp(prev, app.Name)
	if !ok {
		if err := a.down(ctx, name, false); err != nil {
			return nil, fmt.Errorf("bring the project down: %w", err)
		}
		return nil, nil
	}
	pr := *prev
	pr.Source = rev.Source
	ap, err := a.load(ctx, pr, prevApp)
	if err != nil {
		return nil, fmt.Errorf("load the previous revision %s: %w", prev.Digest, err)
	}
	if err := a.ensureImages(ctx, ap.project); err != nil {
		return nil, fmt.Errorf("previous revision %s: %w", prev.Digest, err)
	}
	if err := a.up(ctx, ap, nil, a.waitTimeout(prevApp)); err != nil {
		return nil, fmt.Errorf("up the previous revision %s: %w", prev.Digest, err)
	}
	if err := a.settle(ctx, ap.project, prevApp); err != nil {
		return nil, fmt.Errorf("previous revision %s: %w", prev.Digest, a.describeFailure(ctx, ap.project, err))
	}
	return &appTarget{Rev: pr, App: prevApp}, nil
}

// up runs the equivalent of `docker compose up -d --remove-orphans`:
// containers whose configuration diverged are recreated, and so are those
// of the services in force, whatever their configuration. timeout bounds
// the depends_on conditions.
func (a *Applier) up(ctx context.Context, ap *appProject, force []string, timeout time.Duration) error {
	create := api.CreateOptions{
		Services:             ap.project.ServiceNames(),
		Recreate:             api.RecreateDiverged,
		RecreateDependencies: api.RecreateDiverged,
		RemoveOrphans:        true,
		QuietPull:            true,
	}
	if len(force) > 0 {
		create.Services = force
		create.Recreate = api.RecreateForce
	}
	err := a.svc.Up(ctx, ap.project, api.UpOptions{
		Create: create,
		Start: api.StartOptions{
			Project:     ap.project,
			Services:    ap.project.ServiceNames(),
			WaitTimeout: timeout, // bounds depends_on conditions
		},
	})
	if err != nil {
		return fmt.Errorf("compose up: %w", err)
	}
	return nil
}

// down removes the containers and networks of a project, and its named
// volumes when volumes is set.
func (a *Applier) down(ctx context.Context, project string, volumes bool) error {
	timeout := 10 * time.Second
	return a.svc.Down(ctx, project, api.DownOptions{RemoveOrphans: true, Volumes: volumes, Timeout: &timeout})
}

// projectInfo is what the labels of the engine's resources say about a
// Compose project.
type projectInfo struct {
	name   string
	source string // LabelSource; empty when not managed by berth
	app    string // LabelApp
}

func (p projectInfo) owner() string {
	if p.source == "" {
		return "no berth source (it was not created by berth)"
	}
	return fmt.Sprintf("source %q, app %q", p.source, p.app)
}

// listProjects finds the Compose projects that have containers or networks
// on the engine, with their berth labels; with source set, only the
// projects of that source.
func (a *Applier) listProjects(ctx context.Context, source string) (map[string]projectInfo, error) {
	f := make(client.Filters).Add("label", api.ProjectLabel)
	if source != "" {
		f.Add("label", LabelSource+"="+source)
	}
	out := map[string]projectInfo{}
	add := func(labels map[string]string) {
		name := labels[api.ProjectLabel]
		if name == "" {
			return
		}
		p, ok := out[name]
		if !ok || p.source == "" {
			out[name] = projectInfo{name: name, source: labels[LabelSource], app: labels[LabelApp]}
		}
	}
	cs, err := a.docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list containers on the docker engine %s: %w", a.opts.Host, err)
	}
	for _, c := range cs.Items {
		add(c.Labels)
	}
	ns, err := a.docker.NetworkList(ctx, client.NetworkListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list networks on the docker engine %s: %w", a.opts.Host, err)
	}
	for _, n := range ns.Items {
		add(n.Labels)
	}
	return out, nil
}

// pruneCandidates lists the projects of rev.Source that rev no longer
// deploys, by name.
func pruneCandidates(existing map[string]projectInfo, rev state.Revision) []projectInfo {
	want := desiredNames(rev)
	var out []projectInfo
	for _, p := range existing {
		if p.source != rev.Source || p.app == "" || want[p.app] {
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(x, y projectInfo) int { return strings.Compare(x.name, y.name) })
	return out
}

// prune brings down a project its source no longer deploys. Named volumes
// go too only when the previous revision's app said prune: {volumes: true}.
func (a *Applier) prune(ctx context.Context, p projectInfo, prev *state.Revision) (state.AppStatus, error) {
	status := state.AppStatus{Name: p.app, Kind: kind}
	prevApp, _ := findApp(prev, p.app)
	volumes := prevApp.Prune.Volumes
	if err := a.down(ctx, p.name, volumes); err != nil {
		err = fmt.Errorf("prune app %q (project %s): %w", p.app, p.name, err)
		status.Outcome = OutcomeFailed
		status.Message = err.Error()
		status.Detail = a.detail(ctx, p.name)
		a.log.Error("compose: prune failed", "source", p.source, "app", p.app, "err", err)
		return status, err
	}
	status.Outcome = OutcomePruned
	status.Message = "removed: the revision no longer lists it (containers and networks"
	if volumes {
		status.Message += ", named volumes)"
	} else {
		status.Message += "; named volumes kept)"
	}
	status.Detail, _ = json.Marshal(Detail{Project: p.name, Services: []ServiceStatus{}})
	a.log.Info("compose: pruned", "source", p.source, "app", p.app, "project", p.name, "volumes", volumes)
	return status, nil
}
