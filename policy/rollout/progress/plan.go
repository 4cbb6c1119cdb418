package progress

import (
	"time"

	"github.com/berth-dev/berth/internal/labels"
	"github.com/berth-dev/berth/policy/rollout"
	"github.com/berth-dev/berth/state"
)

// Plan is the Placement of a release's signed rollout plan: the waves open
// at the release's created time plus their after (rollout.Opens), and a
// device is placed by rollout.Place, as the device places itself.
type Plan struct {
	plan       *state.Rollout // selector keys mapped to Prometheus label names
	opens      []time.Time
	repository string
}

var _ Placement = (*Plan)(nil)

// NewPlan returns the Placement of plan for a release of repository (its
// path without registry host, as rollout.Bucket takes it) created at
// created.
//
// The devices' labels come back from Prometheus under Prometheus label
// names (labels.PrometheusName: topology.kubernetes.io/zone is reported as
// topology_kubernetes_io_zone), so the selectors' keys are mapped the same
// way before they are matched.
func NewPlan(plan *state.Rollout, created time.Time, repository string) *Plan {
	p := &Plan{repository: repository, opens: rollout.Opens(plan, created)}
	if plan == nil {
		return p
	}
	mapped := &state.Rollout{Waves: make([]state.Wave, len(plan.Waves))}
	for i, w := range plan.Waves {
		if w.Selector != nil {
			w.Selector = labels.PrometheusLabels(w.Selector)
		}
		mapped.Waves[i] = w
	}
	p.plan = mapped
	return p
}

// Waves returns the plan's waves and their open times, in order; one wave,
// NoPlan, open from the start, without a plan.
func (p *Plan) Waves() []Wave {
	if p.plan == nil || len(p.plan.Waves) == 0 {
		return []Wave{{Name: NoPlan}}
	}
	out := make([]Wave, len(p.plan.Waves))
	for i, w := range p.plan.Waves {
		out[i] = Wave{Name: w.Name, Opens: p.opens[i]}
	}
	return out
}

// Place returns the wave of the device: the first whose selector matches
// its labels (keyed by Prometheus label names), else the percentage wave
// that covers its hash bucket in the repository.
func (p *Plan) Place(device string, labels map[string]string) string {
	if p.plan == nil || len(p.plan.Waves) == 0 {
		return NoPlan
	}
	return rollout.Place(p.plan, rollout.Device{ID: device, Labels: labels}, p.repository).Name
}
