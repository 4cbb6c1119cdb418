package reconcile

import (
	"context"
	"time"

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
// for `berth status`.
type Reporter interface {
	Report(ctx context.Context) any
}
