package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/berth-dev/berth/apply/compose"
	"github.com/berth-dev/berth/apply/helm"
	"github.com/berth-dev/berth/internal/failpoint"
	"github.com/berth-dev/berth/reconcile/config"
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

// The appliers berth has implement these interfaces.
var (
	_ Applier     = (*compose.Applier)(nil)
	_ ImageLoader = (*compose.Applier)(nil)
	_ Reporter    = (*compose.Applier)(nil)
	_ Applier     = (*helm.Applier)(nil)
	_ Watcher     = (*helm.Applier)(nil)
	_ Reporter    = (*helm.Applier)(nil)
)

// NewAppliers creates the appliers the configuration enables, all pulling
// through the configuration's registry mirrors. Image and chart pulls use
// the first source's Docker config (one per device is the usual layout);
// chart pulls trust the first source's CA and speak plain HTTP when it
// does, since charts usually live in the registry of the sources. The
// returned function releases them.
func NewAppliers(ctx context.Context, cfg *config.Config, log *slog.Logger) ([]Applier, func(), error) {
	mirrors, err := cfg.Mirrors()
	if err != nil {
		return nil, nil, err
	}
	var dockerConfig, caFile string
	var plainHTTP bool
	for _, s := range cfg.Sources {
		if s.Credentials.DockerConfig != "" {
			dockerConfig = s.Credentials.DockerConfig
			break
		}
	}
	for _, s := range cfg.Sources {
		if s.CAFile != "" || s.Insecure {
			caFile, plainHTTP = s.CAFile, s.Insecure
			break
		}
	}
	var out []Applier
	var closers []func() error
	if o := cfg.Apply.Compose; o.Enabled {
		ca, err := compose.New(ctx, compose.Options{Host: o.Host, WaitTimeout: o.WaitTimeout, EnvDir: o.EnvDir, DockerConfig: dockerConfig, Mirrors: mirrors, Log: log})
		if err != nil {
			return nil, nil, fmt.Errorf("compose applier: %w", err)
		}
		out, closers = append(out, ca), append(closers, ca.Close)
	}
	if o := cfg.Apply.Helm; o.Enabled {
		ha, err := helm.New(helm.Options{Kubeconfig: o.Kubeconfig, ValuesDir: o.ValuesDir, DockerConfig: dockerConfig, CAFile: caFile, PlainHTTP: plainHTTP, Mirrors: mirrors, Log: log})
		if err != nil {
			return nil, nil, fmt.Errorf("helm applier: %w", err)
		}
		out = append(out, ha)
	}
	return out, func() {
		for _, c := range closers {
			_ = c()
		}
	}, nil
}

// apply hands the revision to every applier and gathers their results.
func (a *Agent) apply(ctx context.Context, rev state.Revision, prev *state.Revision) ([]state.AppStatus, error) {
	failpoint.Hit("reconcile.apply")
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
