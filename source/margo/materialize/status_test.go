package materialize

import (
	"errors"
	"testing"

	"github.com/berth-dev/berth/source/margo/spec"
	"github.com/berth-dev/berth/state"
)

func TestReport(t *testing.T) {
	two := deployment(t, `id: `+idA+`
metadata: {name: app, namespace: ns}
spec:
  applicationId: acme
  deploymentProfile:
    type: compose
    components:
      - {name: db, properties: {repository: oci://r.local/db, revision: 1.0.0}}
      - {name: web, properties: {repository: oci://r.local/web, revision: 1.0.0}}
`)
	bad := deployment(t, composeDeployment(idB, "other", "r.local", "x", "1.0.0", ""))
	plan := &Plan{ManifestVersion: 9, Deployments: []PlanDeployment{{ID: idA, Name: "app", Type: "compose", Components: []PlanComponent{{Name: "db", App: "app-db"}, {Name: "web", App: "app-web"}}}}}
	adopted := func(id string) uint64 { return map[string]uint64{idA: 9, idB: 8}[id] }
	deps := []Deployment{{Deployment: two}, {Deployment: bad}}

	inst := plan.Installing("press-42", []string{idA, idB}, adopted)
	if len(inst) != 1 || inst[0].Status.State != spec.StateInstalling || len(inst[0].Components) != 2 || inst[0].AdoptedManifestVersion != 9 {
		t.Fatalf("Installing = %+v", inst)
	}
	failed := map[string]Failure{idB: {Code: CodeRefused, Component: "web", Err: errors.New("unsafe path")}}
	apps := []state.AppStatus{{Name: "app-db", Kind: "compose", Outcome: "applied"}, {Name: "app-web", Kind: "compose", Outcome: "failed", Message: "web exited 1"}}
	rep := plan.Report("press-42", deps, apps, failed, adopted)
	if len(rep) != 2 {
		t.Fatalf("Report = %+v", rep)
	}
	a := rep[0]
	if a.Status.State != spec.StateFailed || a.Components[0].State != spec.StateInstalled || a.Components[1].Error.Message != "web exited 1" || a.Status.Error.Source != "app" {
		t.Errorf("deployment A = %+v", a)
	}
	b := rep[1]
	if b.Status.State != spec.StateFailed || b.Components[0].Error.Code != CodeRefused || b.AdoptedManifestVersion != 8 {
		t.Errorf("deployment B = %+v", b)
	}
	for _, s := range append(inst, rep...) {
		if err := s.Validate(); err != nil {
			t.Error(err)
		}
	}
	apps[1].Outcome = "applied"
	if rep := plan.Report("press-42", deps[:1], apps, nil, adopted); rep[0].Status.State != spec.StateInstalled {
		t.Errorf("all applied: %+v", rep[0])
	}
}
