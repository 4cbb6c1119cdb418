package progress

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Threshold is how many failures a wave tolerates: a share of the devices
// that tried the release (Percent), or a number of devices (Count).
type Threshold struct {
	// Percent, when IsPercent, is the largest tolerated share, 0 to 100.
	Percent   float64
	IsPercent bool
	// Count, when not IsPercent, is the largest tolerated number.
	Count int
}

// ParseThreshold parses --max-failed: "5%" (a share, 0 to 100) or "3" (a
// number of devices).
func ParseThreshold(s string) (Threshold, error) {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || math.IsNaN(f) || f < 0 || f > 100 {
			return Threshold{}, fmt.Errorf("%w: %q: want a share from 0%% to 100%% such as 5%%, or a number of devices such as 3", ErrThreshold, s)
		}
		return Threshold{Percent: f, IsPercent: true}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return Threshold{}, fmt.Errorf("%w: %q: want a share such as 5%%, or a number of devices such as 3", ErrThreshold, s)
	}
	return Threshold{Count: n}, nil
}

func (t Threshold) String() string {
	if t.IsPercent {
		return strconv.FormatFloat(t.Percent, 'f', -1, 64) + "%"
	}
	return strconv.Itoa(t.Count)
}

// exceeded reports whether failed of tried is over the threshold.
func (t Threshold) exceeded(failed, tried int) bool {
	if t.IsPercent {
		return tried > 0 && float64(failed)*100 > t.Percent*float64(tried)
	}
	return failed > t.Count
}

// Breaker is the circuit breaker of berth rollout watch.
type Breaker struct {
	// MaxFailed is the failures an open wave tolerates.
	MaxFailed Threshold
	// MinDevices is how many devices of a wave must have tried the release
	// (healthy or failed) before the wave is judged, so that the first
	// failure of a large wave does not count as 100 %. At least 1.
	MinDevices int
}

// Trip is an open wave whose failures passed the threshold.
type Trip struct {
	Wave string `json:"wave"`
	// Failed are the ids of the devices that failed the release.
	Failed []string `json:"failed"`
	// Tried is how many devices of the wave tried it (healthy + failed).
	Tried int `json:"tried"`
	// Devices in the wave.
	Devices int `json:"devices"`
}

func (t Trip) String() string {
	return fmt.Sprintf("wave %s: %d of %d devices that tried the release failed (%d in the wave): %s",
		t.Wave, len(t.Failed), t.Tried, t.Devices, strings.Join(t.Failed, ", "))
}

// Check returns the open waves of r whose failures exceed the threshold:
// the release must be paused when there is any. Waves not open yet are
// not judged (their devices do not apply the release).
func (b Breaker) Check(r *Report) []Trip {
	var out []Trip
	for _, w := range r.Waves {
		tried := w.Healthy + len(w.Failed)
		if !w.Open || len(w.Failed) == 0 || tried < max(b.MinDevices, 1) {
			continue
		}
		if b.MaxFailed.exceeded(len(w.Failed), tried) {
			out = append(out, Trip{Wave: w.Name, Failed: w.Failed, Tried: tried, Devices: w.Devices})
		}
	}
	return out
}
