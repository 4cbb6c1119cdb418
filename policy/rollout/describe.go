package rollout

import (
	"time"

	"github.com/berth-dev/berth/state"
)

// WaveReport is one wave of a plan as `berth rollout plan` shows it.
type WaveReport struct {
	// Name of the wave.
	Name string `json:"name"`
	// Selector of a selector wave.
	Selector map[string]string `json:"selector,omitempty"`
	// Percent of a percentage wave (cumulative).
	Percent float64 `json:"percent,omitempty"`
	// After is the wave's delay after the created time, as written.
	After string `json:"after"`
	// Opens is when the wave opens.
	Opens time.Time `json:"opens"`
	// Open is true once now is at or after Opens.
	Open bool `json:"open"`
}

// Describe lists the waves of plan for a release created at created, and
// whether each is open at now; nil without a plan.
func Describe(plan *state.Rollout, created, now time.Time) []WaveReport {
	if plan == nil {
		return nil
	}
	out := make([]WaveReport, len(plan.Waves))
	for i, w := range plan.Waves {
		o := created.Add(w.After)
		out[i] = WaveReport{Name: w.Name, Selector: w.Selector, Percent: w.Percent, After: w.After.String(), Opens: o, Open: !now.Before(o)}
	}
	return out
}
