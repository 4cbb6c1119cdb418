package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/berth-dev/berth/reconcile/config"
	"github.com/berth-dev/berth/source/mirror"
	"github.com/berth-dev/berth/state"
)

// Applier converges the device on a revision: the Compose and Helm
// backends implement it.
type Applier interface {
	// Kind names the applier in status and logs ("compose", "helm").
	Kind() string
	// Apply converges the apps of rev this applier handles, and removes
	// the apps prev had that rev no longer lists. prev is nil on the first
	// apply. On error the applier leaves the device on prev as far as it
	// can and reports per-app outcomes.
	Apply(ctx context.Context, rev state.Revision, prev *state.Revision) ([]state.AppStatus, error)
}

// Watcher is an Applier that also corrects drift between reconciles: what
// runs is brought back to the applied revisions when changed by hand.
type Watcher interface {
	// Watch runs until ctx ends; applied returns the revisions currently
	// applied, one per source.
	Watch(ctx context.Context, applied func() []state.Revision, interval time.Duration) error
}

// Reporter is an Applier that reports the live state of what it applied,
// for `berth status`: one report per app, in the shape every applier
// shares, so that status shows a new applier without knowing it.
type Reporter interface {
	Report(ctx context.Context) []state.AppReport
}

// ImageLoader is an Applier that takes a bundle's images before applying,
// so that it needs no registry for them (the Compose applier loads them
// into its Docker Engine).
type ImageLoader interface {
	// LoadImages makes images (original references pinned by digest,
	// host/repo@sha256:…) present for the applier, reading them through
	// rt, which serves every repository under its original name. Images
	// already present are skipped. Content that does not match its
	// digest is an error wrapping oci.ErrDigestMismatch.
	LoadImages(ctx context.Context, images []string, rt http.RoundTripper) error
}

// applierEnv is what every applier is built with: the registry mirrors,
// the first source's Docker config (one per device is the usual layout),
// and the first source's CA and plain-HTTP setting for chart pulls
// (charts usually live in the registry of the sources).
type applierEnv struct {
	mirrors      *mirror.Resolver
	dockerConfig string
	caFile       string
	plainHTTP    bool
	log          *slog.Logger
}

// applierMaker builds one applier. Each lives in a file of its own whose
// build tag can leave the applier, and its SDK, out of the binary:
// berth_nocompose (a Helm-only agent), berth_nohelm (a Compose-only one).
// Without it, linked is false and new says how to get it.
type applierMaker struct {
	kind    string
	linked  bool
	enabled func(cfg *config.Config) bool
	new     func(ctx context.Context, cfg *config.Config, e applierEnv) (Applier, func() error, error)
	// probe checks that the applier's engine or cluster answers.
	probe func(ctx context.Context, cfg *config.Config) error
}

// probeTimeout bounds each applier's reachability check.
const probeTimeout = 5 * time.Second

// ProbeAppliers checks that what each enabled applier talks to answers
// (the Docker Engine, the kube-apiserver), and returns a warning for each
// that does not, naming the address or kubeconfig it tried.
func ProbeAppliers(ctx context.Context, cfg *config.Config) []string {
	var out []string
	for _, m := range applierMakers {
		if !m.enabled(cfg) || m.probe == nil {
			continue
		}
		if err := m.probe(ctx, cfg); err != nil {
			out = append(out, fmt.Sprintf("%s applier: %v", m.kind, err))
		}
	}
	return out
}

// applierMakers are the appliers in apply order: Compose, then Helm.
var applierMakers = []applierMaker{composeMaker, helmMaker}

// ErrApplierNotLinked is returned when the configuration enables an
// applier this binary was built without.
var ErrApplierNotLinked = errors.New("this berth-agent was built without this applier")

// LinkedAppliers names the appliers linked into this binary.
func LinkedAppliers() []string {
	var out []string
	for _, m := range applierMakers {
		if m.linked {
			out = append(out, m.kind)
		}
	}
	return out
}

// NewAppliers creates the appliers the configuration enables, all pulling
// through the configuration's registry mirrors; image and chart pulls use
// applierEnv's credentials, and without a source that sets them, the margo
// block's (its component registries). The returned function
// releases them.
func NewAppliers(ctx context.Context, cfg *config.Config, log *slog.Logger) ([]Applier, func(), error) {
	mirrors, err := cfg.Mirrors()
	if err != nil {
		return nil, nil, err
	}
	e := applierEnv{mirrors: mirrors, log: log}
	for _, s := range cfg.Sources {
		if s.Credentials.DockerConfig != "" {
			e.dockerConfig = s.Credentials.DockerConfig
			break
		}
	}
	for _, s := range cfg.Sources {
		if s.CAFile != "" || s.Insecure {
			e.caFile, e.plainHTTP = s.CAFile, s.Insecure
			break
		}
	}
	if m := cfg.Margo; m != nil {
		// A Margo device's charts and images come from its component
		// registries, unless a source says otherwise.
		if e.dockerConfig == "" {
			e.dockerConfig = m.Credentials.DockerConfig
		}
		if e.caFile == "" && !e.plainHTTP {
			e.caFile, e.plainHTTP = m.CAFile, m.Insecure
		}
	}
	var out []Applier
	var closers []func() error
	closeAll := func() {
		for _, c := range closers {
			_ = c()
		}
	}
	for _, m := range applierMakers {
		if !m.enabled(cfg) {
			continue
		}
		a, closer, err := m.new(ctx, cfg, e)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("%s applier: %w", m.kind, err)
		}
		out = append(out, a)
		if closer != nil {
			closers = append(closers, closer)
		}
	}
	return out, closeAll, nil
}

// apply hands the revision to every applier and gathers their results.
func (a *Agent) apply(ctx context.Context, rev state.Revision, prev *state.Revision) ([]state.AppStatus, error) {
	var apps []state.AppStatus
	var errs []error
	for _, ap := range a.appliers {
		st, err := ap.Apply(ctx, rev, prev)
		apps = append(apps, st...)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ap.Kind(), err))
		}
	}
	apps = append(apps, a.unhandled(rev)...)
	return apps, errors.Join(errs...)
}

// unhandled reports the apps of rev that no configured applier handles, so
// that status shows them rather than pretending they run.
func (a *Agent) unhandled(rev state.Revision) []state.AppStatus {
	if rev.State == nil {
		return nil
	}
	kinds := map[string]bool{}
	for _, ap := range a.appliers {
		kinds[ap.Kind()] = true
	}
	var out []state.AppStatus
	add := func(app state.App) {
		kind := "compose"
		if app.Helm != nil {
			kind = "helm"
		}
		if !kinds[kind] {
			out = append(out, state.AppStatus{Name: app.Name, Kind: kind, Outcome: "skipped",
				Message: fmt.Sprintf("not applied: the agent configuration has no apply.%s block", kind)})
		}
	}
	for _, app := range rev.State.Apps {
		add(app)
	}
	for _, ext := range rev.State.Extensions {
		if slices.Contains(rev.Extensions, ext.Name) {
			add(ext)
		}
	}
	return out
}
