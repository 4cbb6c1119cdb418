package metrics

import (
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-dev/berth/internal/labels"
)

// The fleet series tell, for every device, what it runs and where it stands
// in a rollout. Each keeps at most one series per source (setting a new
// value deletes the series of the old one), so that a fleet of devices that
// see many releases does not grow the number of series: a device has one
// berth_device_info, and per source one berth_source_applied_info, one
// berth_source_last_outcome, at most one berth_rollout_wave_info and at
// most one berth_rollout_waiting.

// FleetSeries are the names of the fleet series: what rollouts are steered
// by, and the reporter's heartbeat. The reporter sends them as soon as they
// change; the other series go in its periodic snapshots.
var FleetSeries = []string{
	"berth_device_info", "berth_source_applied_info", "berth_source_last_outcome",
	"berth_rollout_wave_info", "berth_rollout_waiting", "berth_report_timestamp_seconds",
}

// Outcome is the value of the outcome label of berth_source_last_outcome.
type Outcome string

// The outcomes of berth_source_last_outcome.
const (
	// OutcomeApplied: the revision was verified, switched in and applied
	// (its apps are healthy).
	OutcomeApplied Outcome = "applied"
	// OutcomeFailed: the appliers failed (an app did not become healthy);
	// the device runs what it ran before.
	OutcomeFailed Outcome = "failed"
	// OutcomeRefused: verification refused the artifact (signature,
	// downgrade, unsafe archive); nothing of it was applied.
	OutcomeRefused Outcome = "refused"
	// OutcomeRolledBack: the device went back to an earlier revision
	// (berth rollback, or an abort statement).
	OutcomeRolledBack Outcome = "rolled_back"
	// OutcomeWaiting: a newer release is known and downloaded but held back;
	// berth_rollout_waiting says why.
	OutcomeWaiting Outcome = "waiting"
)

// Outcomes are the values SetOutcome records; any other is recorded as
// "other", so the label stays bounded.
var Outcomes = []Outcome{OutcomeApplied, OutcomeFailed, OutcomeRefused, OutcomeRolledBack, OutcomeWaiting}

// WaitReason is the value of the reason label of berth_rollout_waiting.
type WaitReason string

// The reasons of berth_rollout_waiting.
const (
	// WaitWave: the device's wave of the rollout plan is not open yet.
	WaitWave WaitReason = "wave"
	// WaitWindow: the device is outside its update window.
	WaitWindow WaitReason = "window"
	// WaitInhibitor: an app inhibits the update.
	WaitInhibitor WaitReason = "inhibitor"
	// WaitPaused: a signed pause statement holds the release.
	WaitPaused WaitReason = "paused"
)

// WaitReasons are the values SetWaiting records; any other is recorded as
// "other".
var WaitReasons = []WaitReason{WaitWave, WaitWindow, WaitInhibitor, WaitPaused}

// fleet holds the fleet series.
type fleet struct {
	device      *deviceInfo
	sourceInfo  *prometheus.GaugeVec
	lastOutcome *prometheus.GaugeVec
	waveInfo    *prometheus.GaugeVec
	waiting     *prometheus.GaugeVec
	reportTime  *prometheus.GaugeVec // no labels: absent until set

	mu sync.Mutex // serialises the delete-and-set of the per-source series
}

func newFleet() *fleet {
	return &fleet{
		device: &deviceInfo{desc: prometheus.NewDesc("berth_device_info", deviceInfoHelp, nil, nil)},
		sourceInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_source_applied_info",
			Help: "The release applied for the source (value 1; one series per source).",
		}, []string{"source", "digest", "version"}),
		lastOutcome: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_source_last_outcome",
			Help: "How the last attempt at the source's newest release ended: applied, failed, refused, rolled_back or waiting (value 1; one series per source).",
		}, []string{"source", "digest", "outcome"}),
		waveInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_rollout_wave_info",
			Help: "The wave of the release's rollout plan this device is in (value 1; one series per source, none for a release without a plan).",
		}, []string{"source", "digest", "wave"}),
		waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_rollout_waiting",
			Help: "Present while the source's newest release is held back, by reason (wave, window, inhibitor, paused); the value is the Unix time the wait is expected to end, 0 when unknown (paused).",
		}, []string{"source", "digest", "reason"}),
		reportTime: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_report_timestamp_seconds",
			Help: "Unix time at which the agent gathered the samples it reports by remote-write: the device's heartbeat (set by the reporter; absent when it does not run).",
		}, nil),
	}
}

func (f *fleet) collectors() []prometheus.Collector {
	return []prometheus.Collector{f.device, f.sourceInfo, f.lastOutcome, f.waveInfo, f.waiting, f.reportTime}
}

const deviceInfoHelp = "The device's id and labels (value 1)."

// SetDevice records the device's id and labels in berth_device_info, each
// label key made a Prometheus label name by labels.PrometheusName. The
// reporter adds the same labels to every series it pushes.
func (m *Metrics) SetDevice(id string, labels map[string]string) {
	if m == nil {
		return
	}
	m.fleet.device.set(id, labels)
}

// Device returns the device id and labels SetDevice recorded, the labels
// keyed by their Prometheus label names; "" and nil before SetDevice.
func (m *Metrics) Device() (string, map[string]string) {
	if m == nil {
		return "", nil
	}
	return m.fleet.device.get()
}

// SetOutcome records how the last attempt at digest, the newest release
// of source, ended, replacing the source's previous berth_source_last_outcome.
// A transport failure (registry unreachable) is no outcome of a release:
// do not call SetOutcome for it.
func (m *Metrics) SetOutcome(source, digest string, outcome Outcome) {
	if m == nil {
		return
	}
	if !slices.Contains(Outcomes, outcome) {
		outcome = "other"
	}
	f := m.fleet
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastOutcome.DeletePartialMatch(prometheus.Labels{"source": source})
	f.lastOutcome.WithLabelValues(source, digest, string(outcome)).Set(1)
}

// SetWave records the wave of the rollout plan of digest that this device
// is in for source; an empty wave (a release without a plan) removes the
// source's berth_rollout_wave_info.
func (m *Metrics) SetWave(source, digest, wave string) {
	if m == nil {
		return
	}
	f := m.fleet
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waveInfo.DeletePartialMatch(prometheus.Labels{"source": source})
	if wave != "" {
		f.waveInfo.WithLabelValues(source, digest, wave).Set(1)
	}
}

// SetWaiting records that digest, the newest release of source, is held
// back for reason until the time given (zero: unknown, as for a pause),
// replacing the source's previous berth_rollout_waiting.
func (m *Metrics) SetWaiting(source, digest string, reason WaitReason, until time.Time) {
	if m == nil {
		return
	}
	if !slices.Contains(WaitReasons, reason) {
		reason = "other"
	}
	v := 0.0
	if !until.IsZero() {
		v = float64(until.Unix())
	}
	f := m.fleet
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waiting.DeletePartialMatch(prometheus.Labels{"source": source})
	f.waiting.WithLabelValues(source, digest, string(reason)).Set(v)
}

// ClearWaiting removes the source's berth_rollout_waiting: its newest
// release is no longer held back.
func (m *Metrics) ClearWaiting(source string) {
	if m == nil {
		return
	}
	f := m.fleet
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waiting.DeletePartialMatch(prometheus.Labels{"source": source})
}

// SetReportTime records t in berth_report_timestamp_seconds; the reporter
// calls it just before it gathers.
func (m *Metrics) SetReportTime(t time.Time) {
	if m == nil {
		return
	}
	m.fleet.reportTime.WithLabelValues().Set(float64(t.UnixMilli()) / 1e3)
}

// deviceInfo is berth_device_info: a collector whose label names are the
// device's, known only when SetDevice is called.
type deviceInfo struct {
	desc *prometheus.Desc

	mu     sync.Mutex
	id     string
	labels map[string]string // by label name
	metric prometheus.Metric
}

// Describe sends nothing: the label names of berth_device_info are the
// device's, so it is an unchecked collector.
func (d *deviceInfo) Describe(chan<- *prometheus.Desc) {}

func (d *deviceInfo) Collect(ch chan<- prometheus.Metric) {
	d.mu.Lock()
	m := d.metric
	d.mu.Unlock()
	if m != nil {
		ch <- m
	}
}

func (d *deviceInfo) set(id string, ls0 map[string]string) {
	ls := labels.PrometheusLabels(ls0)
	names := slices.Sorted(maps.Keys(ls))
	values := make([]string, 0, len(names)+1)
	values = append(values, id)
	for _, n := range names {
		values = append(values, ls[n])
	}
	desc := prometheus.NewDesc("berth_device_info", deviceInfoHelp, append([]string{"device"}, names...), nil)
	m := prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, 1, values...)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.id, d.labels, d.metric = id, ls, m
}

func (d *deviceInfo) get() (string, map[string]string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.id, maps.Clone(d.labels)
}
