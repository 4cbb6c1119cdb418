package reconcile

import (
	"context"
	"slices"
	"time"

	"github.com/berth-dev/berth/apply/devicestate"
	"github.com/berth-dev/berth/reconcile/store"
)

// Revision is a verified, extracted revision handed to the appliers.
type Revision struct {
	// Source is the name of the source the revision belongs to.
	Source string
	// Digest is the artifact's manifest digest.
	Digest string
	// Dir is the extracted artifact; it does not change while applied.
	Dir string
	// State is the artifact's berth.yaml, or nil when it has none.
	State *devicestate.DeviceState
	// Extensions are the extensions this device enables.
	Extensions []string
}

// Apps lists the apps of the revision that uses says an applier deploys
// (such as those with Compose set): its apps, then the extensions the
// device enables, in file order. A revision without a state has none.
func (r Revision) Apps(uses func(devicestate.App) bool) []devicestate.App {
	if r.State == nil {
		return nil
	}
	var out []devicestate.App
	for _, app := range r.State.Apps {
		if uses(app) {
			out = append(out, app)
		}
	}
	for _, ext := range r.State.Extensions {
		if uses(ext) && slices.Contains(r.Extensions, ext.Name) {
			out = append(out, ext)
		}
	}
	return out
}

// App returns the app named name among r.Apps(uses); r may be nil (no
// previous revision).
func (r *Revision) App(name string, uses func(devicestate.App) bool) (devicestate.App, bool) {
	if r == nil {
		return devicestate.App{}, false
	}
	for _, app := range r.Apps(uses) {
		if app.Name == name {
			return app, true
		}
	}
	return devicestate.App{}, false
}

// Applier converges the device on a revision: the Compose and Helm
// backends implement it.
type Applier interface {
	// Kind names the applier in status and logs ("compose", "helm").
	Kind() string
	// Apply converges the apps of rev this applier handles, and removes
	// the apps prev had that rev no longer lists. prev is nil on the first
	// apply. On error the applier leaves the device on prev as far as it
	// can and reports per-app outcomes.
	Apply(ctx context.Context, rev Revision, prev *Revision) ([]store.AppStatus, error)
}

// Watcher is an Applier that also corrects drift between reconciles: what
// runs is brought back to the applied revisions when changed by hand.
type Watcher interface {
	// Watch runs until ctx ends; applied returns the revisions currently
	// applied, one per source.
	Watch(ctx context.Context, applied func() []Revision, interval time.Duration) error
}

// Reporter is an Applier that reports the live state of what it applied,
// for `berth status`.
type Reporter interface {
	Report(ctx context.Context) any
}
