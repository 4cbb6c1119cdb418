// Package fleetsim simulates devices that report to Prometheus: each has
// the agent's real metrics (package metrics) and the real remote-write
// reporter (package report), with a clock the simulation sets. Tests and
// benchmarks of fleet status feed a real Prometheus with it.
package fleetsim

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/berth-dev/berth/reconcile/metrics"
	"github.com/berth-dev/berth/reconcile/report"
)

// Options configure the simulated devices.
type Options struct {
	// URL is the remote-write endpoint; CAFile its CA (https).
	URL, CAFile string
	// Dir holds the devices' queues.
	Dir string
	// Interval of the reporters. Default 1m.
	Interval time.Duration
	// Refresh of the reporters (see report.Options). Default the
	// reporter's.
	Refresh time.Duration
	// MaxSize of the reporters' queues. Default the reporter's.
	MaxSize int64
	// Log receives the reporters' logs; default discarded.
	Log *slog.Logger
}

// Device is one simulated device.
type Device struct {
	ID       string
	Labels   map[string]string
	Metrics  *metrics.Metrics
	Reporter *report.Reporter

	mu  sync.Mutex
	now time.Time
}

// NewDevice makes a device that reports with o.
func NewDevice(o Options, id string, labels map[string]string) (*Device, error) {
	d := &Device{ID: id, Labels: labels, Metrics: metrics.New()}
	if err := d.Reconnect(o); err != nil {
		return nil, err
	}
	return d, nil
}

// Reconnect gives the device a new reporter configured by o, with the same
// metrics and queue folder (as the agent restarted with another
// configuration).
func (d *Device) Reconnect(o Options) error {
	id, labels := d.ID, d.Labels
	log := o.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r, err := report.New(report.Options{
		URL: o.URL, CAFile: o.CAFile, Insecure: len(o.URL) > 7 && o.URL[:7] == "http://",
		Interval: o.Interval, Refresh: o.Refresh, MaxSize: o.MaxSize,
		QueueDir: filepath.Join(o.Dir, id), Device: id, Labels: labels, Metrics: d.Metrics,
		Log: log.With("device", id), UserAgent: "berth-fleetsim", Now: d.clock,
	})
	if err != nil {
		return fmt.Errorf("device %s: %w", id, err)
	}
	d.Reporter = r
	return nil
}

func (d *Device) clock() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.now
}

// Tick gathers and pushes as the device's reporter does every interval,
// at time at.
func (d *Device) Tick(ctx context.Context, at time.Time) {
	d.mu.Lock()
	d.now = at
	d.mu.Unlock()
	d.Reporter.Tick(ctx)
}

// Poll records an unchanged reconcile of source at time at, as the agent
// does at every poll.
func (d *Device) Poll(source string, at time.Time) {
	d.Metrics.ObserveReconcile(source, "unchanged", 15*time.Millisecond)
	d.Metrics.SetLastSuccess(source, at)
}

// Apply records that the device applied digest (version) for source.
func (d *Device) Apply(source, digest, version string, at time.Time) {
	d.Metrics.ObserveReconcile(source, "applied", 2*time.Second)
	d.Metrics.SetLastSuccess(source, at)
	d.Metrics.SetApplied(source, digest, version, "")
	d.Metrics.SetOutcome(source, digest, metrics.OutcomeApplied)
	d.Metrics.ClearWaiting(source)
}

// Fail records that the device failed digest for source.
func (d *Device) Fail(source, digest string, outcome metrics.Outcome) {
	d.Metrics.ObserveReconcile(source, string(outcome), 30*time.Second)
	d.Metrics.SetOutcome(source, digest, outcome)
	d.Metrics.ClearWaiting(source)
}
