package metrics

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The rollout series of the fleet status (issue 13): where the device
// stands in a release's rollout. Each keeps at most one series per source
// (setting a new value deletes the source's old series), so a device that
// sees many releases does not grow the number of series; their labels are
// bounded (the wave is a name from the signed plan, the reason one of
// WaitReasons).
//
// The same names, labels and methods as the fleet series of the reporting
// work (berth_device_info, berth_source_applied_info,
// berth_source_last_outcome live there): when both are merged, this file
// gives way to that one.

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

// rolloutSeries holds berth_rollout_wave_info and berth_rollout_waiting.
type rolloutSeries struct {
	waveInfo *prometheus.GaugeVec
	waiting  *prometheus.GaugeVec

	mu sync.Mutex // serialises the delete-and-set of the per-source series
}

func newRolloutSeries() *rolloutSeries {
	return &rolloutSeries{
		waveInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_rollout_wave_info",
			Help: "The wave of the release's rollout plan this device is in (value 1; one series per source, none for a release without a plan).",
		}, []string{"source", "digest", "wave"}),
		waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_rollout_waiting",
			Help: "Present while the source's newest release is held back, by reason (wave, window, inhibitor, paused); the value is the Unix time the wait is expected to end, 0 when unknown (paused).",
		}, []string{"source", "digest", "reason"}),
	}
}

// SetWave records the wave of the rollout plan of digest that this device
// is in for source; an empty wave (a release without a plan) removes the
// source's berth_rollout_wave_info.
func (m *Metrics) SetWave(source, digest, wave string) {
	if m == nil {
		return
	}
	r := m.rollout
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waveInfo.DeletePartialMatch(prometheus.Labels{"source": source})
	if wave != "" {
		r.waveInfo.WithLabelValues(source, digest, wave).Set(1)
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
	r := m.rollout
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waiting.DeletePartialMatch(prometheus.Labels{"source": source})
	r.waiting.WithLabelValues(source, digest, string(reason)).Set(v)
}

// ClearWaiting removes the source's berth_rollout_waiting: its newest
// release is no longer held back.
func (m *Metrics) ClearWaiting(source string) {
	if m == nil {
		return
	}
	r := m.rollout
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waiting.DeletePartialMatch(prometheus.Labels{"source": source})
}
