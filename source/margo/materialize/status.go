package materialize

import (
	"github.com/berth-dev/berth/source/margo/spec"
	"github.com/berth-dev/berth/state"
)

// Applier outcomes (state.AppStatus.Outcome) as the Compose and Helm
// appliers report them.
const (
	outcomeApplied = "applied"
	outcomeFailed  = "failed"
)

// Installing returns an installing status for each deployment of the plan
// whose id is in ids (the changed ones), to post before the appliers run.
func (p *Plan) Installing(deviceID string, ids []string, adopted func(id string) uint64) []spec.DeploymentStatus {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var out []spec.DeploymentStatus
	for _, d := range p.Deployments {
		if !want[d.ID] || d.Carried {
			continue
		}
		cs := make([]spec.ComponentStatus, len(d.Components))
		for i, c := range d.Components {
			cs[i] = spec.ComponentStatus{Name: c.Name, State: spec.StateInstalling}
		}
		out = append(out, spec.NewStatus(d.ID, deviceID, d.Name, adopted(d.ID), cs))
	}
	return out
}

// Report returns the status of every deployment of deps after the appliers
// applied the plan: a component is installed when its app was applied,
// failed (with the applier's message) when it failed, pending when the
// appliers did not get to it; a deployment in failed is failed with its
// Failure (on its component, else on every component), whether or not its
// previous apps were carried over.
func (p *Plan) Report(deviceID string, deps []Deployment, apps []state.AppStatus, failed map[string]Failure, adopted func(id string) uint64) []spec.DeploymentStatus {
	byApp := map[string]state.AppStatus{}
	for _, a := range apps {
		byApp[a.Name] = a
	}
	planned := map[string]PlanDeployment{}
	for _, d := range p.Deployments {
		planned[d.ID] = d
	}
	var out []spec.DeploymentStatus
	for _, dep := range deps {
		d := dep.Deployment
		var cs []spec.ComponentStatus
		if f, bad := failed[d.ID]; bad {
			for _, c := range d.Profile.Components {
				st := spec.ComponentStatus{Name: c.Name, State: spec.StateFailed}
				if f.Component == "" || f.Component == c.Name {
					st.Error = &spec.StatusError{Code: f.Code, Source: c.Name, Message: f.Err.Error()}
				} else {
					st.State = spec.StatePending
				}
				cs = append(cs, st)
			}
			out = append(out, spec.NewStatus(d.ID, deviceID, d.Name, adopted(d.ID), cs))
			continue
		}
		pd, ok := planned[d.ID]
		if !ok {
			continue
		}
		for _, c := range pd.Components {
			st := spec.ComponentStatus{Name: c.Name, State: spec.StatePending}
			if a, ok := byApp[c.App]; ok {
				switch a.Outcome {
				case outcomeApplied:
					st.State = spec.StateInstalled
				case outcomeFailed:
					st.State = spec.StateFailed
					st.Error = &spec.StatusError{Code: "APPLY_FAILED", Source: c.Name, Message: a.Message}
					if a.Message == "" {
						st.Error.Message = a.Kind + " apply of " + c.App + " failed"
					}
				}
			}
			cs = append(cs, st)
		}
		out = append(out, spec.NewStatus(d.ID, deviceID, d.Name, adopted(d.ID), cs))
	}
	return out
}
