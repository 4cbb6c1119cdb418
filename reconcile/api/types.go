// Package api serves the agent's local HTTP API on a unix socket (and
// optionally TCP) and is the client the CLI uses.
//
// Routes:
//
//	GET  /healthz                 200 "ok" while the process serves
//	GET  /readyz                  200 "ok", or 503 with why the agent is not ready
//	GET  /status                  Status
//	GET  /history/{source}        []store.Revision, newest first
//	GET  /metrics                 Prometheus metrics
//	POST /reconcile[?source=S][&ignoreWindows=true]  []ReconcileResult, after
//	                              reconciling synchronously (ignoreWindows: also
//	                              outside the update windows, for a technician)
//	POST /suspend/{source}        stop reconciling the source
//	POST /resume/{source}         reconcile it again
//	POST /rollback/{source}[?digest=D]  ReconcileResult
//	POST /hooks/registry          distribution notification events; []string of
//	                              the sources triggered
//	GET  /inhibitors              InhibitorList: the inhibitors that hold now
//	POST /inhibit/{app}?for=D[&reason=R][&by=B]  inhibit.Inhibitor: hold app's
//	                              updates for D (writes <stateDir>/inhibit/<app>.json)
//	POST /inhibit/{app}/release   Released
//
// Errors are JSON objects {"error": "..."} with status 400, 404 (unknown
// source), 405, 409 (conflict), 413, 415 or 500. Suspend, resume and rollback
// are served on the unix socket only: TCP has no authentication.
package api

import (
	"context"
	"encoding/json"
	"time"

	"github.com/berth-dev/berth/policy/inhibit"
	"github.com/berth-dev/berth/reconcile/report"
	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/state"
)

// Status is what GET /status returns.
type Status struct {
	// Version is the agent's version.
	Version string `json:"version"`
	// StateDir is the agent's state folder.
	StateDir string `json:"stateDir"`
	// Device is the device's identity, for staged rollouts; nil when the
	// agent does not run.
	Device *Device `json:"device,omitempty"`
	// Sources lists the configured sources, in configuration order.
	Sources []SourceStatus `json:"sources"`
	// Apps are the appliers' live reports of the apps they applied (what
	// runs, the last apply, drift corrections), by source and app.
	Apps []state.AppReport `json:"apps,omitempty"`
	// Report is the state of the remote-write reporting
	// (report.prometheus); nil when it is not configured.
	Report *report.Status `json:"report,omitempty"`
}

// SourceStatus is the configuration and state of one source.
type SourceStatus struct {
	// Name is the source's name in the configuration.
	Name string `json:"name"`
	// URL is the oci:// reference the source tracks.
	URL string `json:"url"`
	// Ref is how the reference is resolved: tag, digest, semver or filter.
	Ref string `json:"ref"`
	// Interval is the polling interval (a Go duration).
	Interval string `json:"interval"`
	// NextReconcile is when the next reconcile is due; zero when suspended.
	NextReconcile time.Time `json:"nextReconcile,omitzero"`
	// Reconciling is true while a reconcile of the source runs.
	Reconciling bool `json:"reconciling,omitempty"`
	// Windows are the source's update windows, and when the next apply
	// window opens; nil when the agent does not run.
	Windows *Windows `json:"windows,omitempty"`
	// Inhibitors are the inhibitors that hold the apps of the source's
	// applied revision or of the revision waiting, now.
	Inhibitors []inhibit.Inhibitor `json:"inhibitors,omitempty"`
	// SourceState is what state.json records about the source: with the
	// revision waiting (Waiting) and the rollouts seen (Releases).
	store.SourceState
	// Detail is the source's own account, for scripts (the Margo source's
	// WFM, accepted manifestVersion, deployments and queued status
	// posts); absent for OCI and bundle sources.
	Detail json.RawMessage `json:"detail,omitempty"`
}

// Device is who the device is, for staged rollouts.
type Device struct {
	// ID is the device id (agent.yaml device.id, or derived from the
	// machine id).
	ID string `json:"id"`
	// Labels are the device's labels.
	Labels map[string]string `json:"labels,omitempty"`
}

// Windows are a source's update windows as status shows them.
type Windows struct {
	// Apply and Download are the schedules: "always", or the windows
	// ("mon,tue 22:00-05:00 Europe/Berlin").
	Apply    string `json:"apply"`
	Download string `json:"download"`
	// ApplyOpen is true when an apply window is open now.
	ApplyOpen bool `json:"applyOpen"`
	// NextApply is when the next apply window opens, when ApplyOpen is
	// false.
	NextApply time.Time `json:"nextApply,omitzero"`
}

// ReconcileResult is how the reconcile of one source ended.
type ReconcileResult struct {
	// Source is the source's name.
	Source string `json:"source"`
	// Outcome is a store.Outcome: applied, unchanged, failed, refused,
	// error or rolled-back.
	Outcome string `json:"outcome"`
	// Digest is the digest resolved or applied, when known.
	Digest string `json:"digest,omitempty"`
	// Error says why the reconcile failed.
	Error string `json:"error,omitempty"`
	// Message says why a revision was held back (waiting), not adopted
	// (aborted) or gone back from (rolledback by a signed abort).
	Message string `json:"message,omitempty"`
	// Via says where the fetches of this reconcile were served from
	// (registry mirrors or a bundle); nil when no mirror applies.
	Via *store.Via `json:"via,omitempty"`
	// Waiting says what holds the revision back when Outcome is waiting.
	Waiting *store.Waiting `json:"waiting,omitempty"`
}

// ReconcileOptions shape a reconcile on request.
type ReconcileOptions struct {
	// IgnoreWindows switches and applies outside the update windows (and
	// downloads outside the download windows): for a technician on site.
	// Rollout waves, signed statements and inhibitors still apply.
	IgnoreWindows bool
}

// Failed reports whether the reconcile failed: its outcome is failed,
// refused or error, or it carries an error.
func (r ReconcileResult) Failed() bool {
	switch store.Outcome(r.Outcome) {
	case store.OutcomeFailed, store.OutcomeRefused, store.OutcomeError:
		return true
	}
	return r.Error != ""
}

// StatusProvider reports the agent's status.
type StatusProvider interface {
	// Status returns the status of the agent and of every source.
	Status() Status
}

// Reconciler reconciles on request.
type Reconciler interface {
	// ReconcileNow reconciles source, or every source when source is "",
	// and returns when done, one result per source reconciled. An unknown
	// source is an error wrapping ErrUnknownSource.
	ReconcileNow(ctx context.Context, source string, o ReconcileOptions) ([]ReconcileResult, error)
}

// Controller carries out operators' commands on a source. Errors wrap
// ErrUnknownSource for an unknown source and ErrConflict when the command
// cannot be done.
type Controller interface {
	// Suspend stops (suspend true) or resumes reconciling source.
	Suspend(source string, suspend bool) error
	// Rollback switches source back to the stored revision digest, or to
	// the previous applied revision when digest is "", and applies it.
	Rollback(ctx context.Context, source, digest string) (ReconcileResult, error)
}

// RepositoryNotifier learns from registry notifications that a repository
// changed.
type RepositoryNotifier interface {
	// NotifyRepository triggers, without waiting for them, the reconciles of
	// the sources that track repository on host (host[:port]) and returns
	// their names. tag and digest are what was pushed; either may be "".
	NotifyRepository(ctx context.Context, host, repository, tag, digest string) []string
}

// Readiness reports whether the agent is ready.
type Readiness interface {
	// Ready returns nil once every source not suspended has been reconciled
	// at least once, else why the agent is not ready.
	Ready() error
}

// Agent is everything the server needs from the agent.
type Agent interface {
	StatusProvider
	Reconciler
	Controller
	RepositoryNotifier
	Readiness
}
