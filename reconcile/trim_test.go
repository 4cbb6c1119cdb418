package reconcile

import "testing"

// TestTrims: memory is handed back after start-up, applies, rollbacks and
// failed applies, and after a poll whose outcome is new; not after a poll
// that found nothing new, nor after one held back (or failing) again as
// the last one was.
func TestTrims(t *testing.T) {
	waiting := apiResult{Outcome: "waiting", Digest: "sha256:b", Message: "waiting for wave all (opens 2026-12-09T08:00:00Z)"}
	for _, tc := range []struct {
		name      string
		first     bool
		prev, res apiResult
		want      bool
	}{
		{"start-up", true, apiResult{}, apiResult{Outcome: "unchanged"}, true},
		{"steady poll", false, apiResult{Outcome: "unchanged"}, apiResult{Outcome: "unchanged"}, false},
		{"backing off", false, apiResult{Outcome: "failed"}, apiResult{Outcome: "backoff"}, false},
		{"applied", false, apiResult{Outcome: "unchanged"}, apiResult{Outcome: "applied", Digest: "sha256:b"}, true},
		{"rolled back", false, apiResult{Outcome: "applied"}, apiResult{Outcome: "rolled-back"}, true},
		{"failed apply, again", false, apiResult{Outcome: "failed", Error: "x"}, apiResult{Outcome: "failed", Error: "x"}, true},
		{"held back: new", false, apiResult{Outcome: "unchanged"}, waiting, true},
		{"held back again", false, waiting, waiting, false},
		{"held back, now prefetched", false, apiResult{Outcome: "waiting", Digest: "sha256:b", Message: "waiting for wave all (opens …); verifying and downloading it from …"}, waiting, true},
		{"held back for another release", false, waiting, apiResult{Outcome: "waiting", Digest: "sha256:c", Message: waiting.Message}, true},
		{"registry error again", false, apiResult{Outcome: "error", Error: "connection refused"}, apiResult{Outcome: "error", Error: "connection refused"}, false},
		{"registry error: new", false, apiResult{Outcome: "unchanged"}, apiResult{Outcome: "error", Error: "connection refused"}, true},
	} {
		if got := trims(tc.first, tc.prev, tc.res); got != tc.want {
			t.Errorf("%s: trims = %v, want %v", tc.name, got, tc.want)
		}
	}
}
