package progress

import (
	"testing"
	"time"

	"github.com/berth-dev/berth/policy/rollout"
	"github.com/berth-dev/berth/state"
)

// TestPlan places devices as they place themselves (rollout.Place), with
// their labels as Prometheus holds them: a selector key that is no
// Prometheus label name (topology.kubernetes.io/zone) still matches.
func TestPlan(t *testing.T) {
	created := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	plan := &state.Rollout{Waves: []state.Wave{
		{Name: "canary", Selector: map[string]string{"topology.kubernetes.io/zone": "hall-b", "ring": "canary"}},
		{Name: "early", Percent: 10, After: time.Hour},
		{Name: "all", Percent: 100, After: 24 * time.Hour},
	}}
	p := NewPlan(plan, created, "fleet/line-3")
	waves := p.Waves()
	if len(waves) != 3 || waves[0].Name != "canary" || !waves[0].Opens.Equal(created) ||
		!waves[1].Opens.Equal(created.Add(time.Hour)) || !waves[2].Opens.Equal(created.Add(24*time.Hour)) {
		t.Fatalf("waves = %+v", waves)
	}
	canary := map[string]string{"topology_kubernetes_io_zone": "hall-b", "ring": "canary"}
	if got := p.Place("d1", canary); got != "canary" {
		t.Errorf("canary labels placed in %s", got)
	}
	if got := p.Place("d1", map[string]string{"ring": "canary"}); got == "canary" {
		t.Error("a device without the zone label placed in canary")
	}
	// Percentage waves: the device's own computation decides.
	for i := range 50 {
		id := string(rune('a'+i%26)) + string(rune('a'+i/26))
		want := rollout.Place(plan, rollout.Device{ID: id}, "fleet/line-3").Name
		if got := p.Place(id, nil); got != want {
			t.Errorf("device %s: %s, the device places itself in %s", id, got, want)
		}
	}
	// The caller's plan is not changed by the mapping.
	if _, ok := plan.Waves[0].Selector["topology.kubernetes.io/zone"]; !ok {
		t.Error("NewPlan changed the plan's selector")
	}
	// Without a plan: one wave, open from the start.
	none := NewPlan(nil, created, "fleet/line-3")
	if w := none.Waves(); len(w) != 1 || w[0].Name != NoPlan || !w[0].Opens.IsZero() || none.Place("d1", nil) != NoPlan {
		t.Errorf("no plan: %+v", w)
	}
}
