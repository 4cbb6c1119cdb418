package progress

import (
	"errors"
	"reflect"
	"testing"

	"github.com/berth-dev/berth/reconcile/metrics"
)

// TestOutcomesMatchTheAgent keeps the outcomes progress counts as failures
// equal to those the agent reports.
func TestOutcomesMatchTheAgent(t *testing.T) {
	if outcomeFailed != string(metrics.OutcomeFailed) || outcomeRefused != string(metrics.OutcomeRefused) {
		t.Fatalf("progress counts %q and %q as failures, the agent reports %q and %q", outcomeFailed, outcomeRefused, metrics.OutcomeFailed, metrics.OutcomeRefused)
	}
}

func TestParseThreshold(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Threshold
		err  bool
	}{
		{in: "5%", want: Threshold{Percent: 5, IsPercent: true}},
		{in: " 0.5 %", want: Threshold{Percent: 0.5, IsPercent: true}},
		{in: "100%", want: Threshold{Percent: 100, IsPercent: true}},
		{in: "3", want: Threshold{Count: 3}},
		{in: "0", want: Threshold{Count: 0}},
		{in: "101%", err: true},
		{in: "-1", err: true},
		{in: "NaN%", err: true},
		{in: "five", err: true},
		{in: "", err: true},
	} {
		got, err := ParseThreshold(tc.in)
		if tc.err {
			if !errors.Is(err, ErrThreshold) {
				t.Errorf("%q: err %v, want ErrThreshold", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if back, _ := ParseThreshold(got.String()); back != got {
			t.Errorf("%q: String %q does not parse back", tc.in, got.String())
		}
	}
}

// TestBreaker judges reports made by hand.
func TestBreaker(t *testing.T) {
	wave := func(name string, open bool, healthy int, failed ...string) WaveStatus {
		return WaveStatus{Name: name, Open: open, Healthy: healthy, Failed: failed, Devices: healthy + len(failed) + 10}
	}
	pct := func(p float64) Threshold { return Threshold{Percent: p, IsPercent: true} }
	for _, tc := range []struct {
		name  string
		b     Breaker
		waves []WaveStatus
		want  []string // waves tripped
	}{
		{"no failures", Breaker{MaxFailed: pct(0)}, []WaveStatus{wave("a", true, 5)}, nil},
		{"zero tolerance", Breaker{MaxFailed: pct(0)}, []WaveStatus{wave("a", true, 5, "d1")}, []string{"a"}},
		{"under the share", Breaker{MaxFailed: pct(20)}, []WaveStatus{wave("a", true, 4, "d1")}, nil},          // 20 % is not over 20 %
		{"over the share", Breaker{MaxFailed: pct(20)}, []WaveStatus{wave("a", true, 3, "d1")}, []string{"a"}}, // 25 %
		{"too few tried", Breaker{MaxFailed: pct(5), MinDevices: 3}, []WaveStatus{wave("a", true, 1, "d1")}, nil},
		{"enough tried", Breaker{MaxFailed: pct(5), MinDevices: 3}, []WaveStatus{wave("a", true, 2, "d1")}, []string{"a"}},
		{"closed wave not judged", Breaker{MaxFailed: pct(5)}, []WaveStatus{wave("a", true, 9), wave("b", false, 0, "d1", "d2")}, nil},
		{"count", Breaker{MaxFailed: Threshold{Count: 1}}, []WaveStatus{wave("a", true, 0, "d1"), wave("b", true, 50, "d2", "d3")}, []string{"b"}},
		{"any open wave", Breaker{MaxFailed: pct(10)}, []WaveStatus{wave("a", true, 1, "d1"), wave("b", true, 1, "d2")}, []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, tr := range tc.b.Check(&Report{Waves: tc.waves}) {
				got = append(got, tr.Wave)
				if len(tr.Failed) == 0 || tr.Tried < len(tr.Failed) || tr.String() == "" {
					t.Errorf("trip %+v", tr)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("tripped %v, want %v", got, tc.want)
			}
		})
	}
}
