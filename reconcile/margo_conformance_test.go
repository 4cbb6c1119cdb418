package reconcile

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/source/margo/margotest"
	"github.com/berth-dev/berth/state"
)

// Deployments addressed to devices other than this one.
const (
	depChild  = "2b6c1f1e-2a44-4c7e-9d51-7e3f5a0c9b21" // press-42/line-cam: a child of this device
	depAuto   = "3b6c1f1e-2a44-4c7e-9d51-7e3f5a0c9b21" // press-42/*: autonomous placement
	depOtherG = "4b6c1f1e-2a44-4c7e-9d51-7e3f5a0c9b21" // gw-9/press-9: a child of another gateway
)

// deploymentFor is e.deployment addressed to metadata.deviceId dev.
func (e *margoEnv) deploymentFor(dev, id, name, repo, rev string) []byte {
	y := e.deployment(id, name, repo, rev)
	return []byte(strings.Replace(string(y), "deviceId: press-42}", "deviceId: "+dev+"}", 1))
}

// TestMargoGatewayDeploymentsRefused: berth is a device, not a see-thru
// gateway. A manifest that also carries deployments addressed to a child
// device (press-42/line-cam), to the gateway's autonomous placement
// (press-42/*) or to another gateway's child is applied for this device
// only; each of the others is refused (never fetched from a registry,
// never applied) and reported failed with Margo's reserved gateway codes,
// 101 unknown child device and 103 autonomous placement not supported. A
// deployment that ran here and is re-addressed to a child keeps running
// (only absence from the manifest removes a workload) and is reported
// failed. Capabilities are put for this device only.
func TestMargoGatewayDeploymentsRefused(t *testing.T) {
	e := newMargoEnv(t)
	e.archive("acme/a", "1.0.0", "a1", true)
	e.archive("acme/a", "2.0.0", "a2", true)
	e.archive("acme/c", "1.0.0", "c1", true)
	e.wfm.Publish(1,
		e.deployment(depA, "alpha", "acme/a", "1.0.0"),
		e.deploymentFor("press-42/line-cam", depChild, "child", "acme/c", "1.0.0"),
		e.deploymentFor("press-42/*", depAuto, "auto", "acme/c", "1.0.0"),
		e.deploymentFor("gw-9/press-9", depOtherG, "other", "acme/c", "1.0.0"))
	a := e.agent()
	mark := e.requestCount()
	r := e.once(a)
	for _, want := range []string{
		`targets device "press-42/line-cam", this device is "press-42"`,
		"asks for autonomous placement (press-42/*), which this device does not support",
		`targets device "gw-9/press-9"`,
	} {
		if !strings.Contains(r.Error, want) {
			t.Errorf("result error %q does not say %q", r.Error, want)
		}
	}
	if r.Outcome != "applied" {
		t.Fatalf("outcome %q, want applied (for this device's deployment)", r.Outcome)
	}
	for _, c := range e.ap.log() {
		if !slices.Equal(c.apps, []string{"alpha-web"}) {
			t.Fatalf("applied apps %v, want only this device's alpha-web", c.apps)
		}
	}
	if got := e.states(depA); !slices.Equal(got, []string{"installing", "installed"}) {
		t.Errorf("statuses of this device's deployment = %v", got)
	}
	for _, tt := range []struct{ id, code, dev string }{{depChild, "101", "press-42/line-cam"}, {depAuto, "103", "press-42/*"}, {depOtherG, "101", "gw-9/press-9"}} {
		got := e.states(tt.id)
		if !slices.Equal(got, []string{"failed"}) {
			t.Errorf("statuses of the deployment for %s = %v, want failed only (never installing)", tt.dev, got)
			continue
		}
		s := lastStatus(e.wfm, tt.id)
		if s.DeviceID != "press-42" || len(s.Components) != 1 || s.Components[0].Error["code"] != tt.code || s.Components[0].Error["source"] != "web" ||
			!strings.Contains(fmt.Sprint(s.Components[0].Error["message"]), tt.dev) || s.Error["code"] != tt.code {
			t.Errorf("status of the deployment for %s = %+v, want failed with code %s naming the device", tt.dev, s, tt.code)
		}
	}
	// Nothing of acme/c was pulled: the refusal comes before any fetch.
	for _, p := range e.requestsSince(mark) {
		if strings.Contains(p, "acme/c") {
			t.Errorf("the registry served %s for a deployment of another device", p)
		}
	}
	st := e.margoState()
	if st.ManifestVersion != 1 {
		t.Errorf("accepted manifestVersion %d, want 1", st.ManifestVersion)
	}
	for _, id := range []string{depChild, depAuto, depOtherG} {
		if _, ok := st.Deployments[id]; ok {
			t.Errorf("deployment %s of another device is in the accepted state as deployed here", id)
		}
	}

	// The deployment that runs here is re-addressed to a child: refused,
	// reported failed, and its app keeps running.
	e.wfm.Publish(2, e.deploymentFor("press-42/line-cam", depA, "alpha", "acme/a", "2.0.0"))
	r = e.once(a)
	if !strings.Contains(r.Error, `targets device "press-42/line-cam"`) {
		t.Errorf("re-addressed deployment: %+v", r)
	}
	for _, c := range e.ap.log() {
		if !slices.Equal(c.apps, []string{"alpha-web"}) {
			t.Fatalf("applied apps %v after the re-addressing, want alpha-web kept as it was", c.apps)
		}
	}
	if got := e.states(depA); !slices.Equal(got, []string{"installing", "installed", "failed"}) {
		t.Errorf("statuses of the re-addressed deployment = %v", got)
	}
	if s := lastStatus(e.wfm, depA); s.Components[0].Error["code"] != "101" || s.AdoptedManifestVersion != 1 {
		t.Errorf("status of the re-addressed deployment = %+v, want 101 at adopted manifestVersion 1", s)
	}
	if st := e.margoState(); st.ManifestVersion != 2 || st.Deployments[depA].AdoptedManifestVersion != 1 {
		t.Errorf("accepted state after the re-addressing = %+v", st)
	}

	// Capabilities: for this device only, never for a child.
	for _, req := range e.wfm.Requests() {
		if req.Method == http.MethodPut && req.Path != "/api/v1/capabilities/press-42" {
			t.Errorf("capabilities put at %s", req.Path)
		}
	}
	e.checkViolations()
}

// lastStatus is the last status the WFM received for id.
func lastStatus(w *margotest.WFM, id string) margotest.Status {
	sts := w.Statuses()
	for i := len(sts) - 1; i >= 0; i-- {
		if sts[i].DeploymentID == id {
			return sts[i]
		}
	}
	return margotest.Status{}
}

// stateApplier records the desired state of every revision applied.
type stateApplier struct {
	mu   sync.Mutex
	apps [][]state.App
}

var _ Applier = (*stateApplier)(nil)

func (a *stateApplier) Kind() string { return "compose" }

func (a *stateApplier) Apply(_ context.Context, rev state.Revision, _ *state.Revision) ([]state.AppStatus, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.apps = append(a.apps, slices.Clone(rev.State.Apps))
	var out []state.AppStatus
	for _, app := range rev.State.Apps {
		out = append(out, state.AppStatus{Name: app.Name, Kind: "compose", Outcome: "applied"})
	}
	return out, nil
}

// TestMargoComponentOrderWaitTimeout: the components of a deployment
// become the appliers' apps in the listed order, each with its own wait
// (wait: false: applied once started) and timeout (its install deadline).
func TestMargoComponentOrderWaitTimeout(t *testing.T) {
	e := newMargoEnv(t)
	e.archive("acme/a", "1.0.0", "a1", true)
	ap := &stateApplier{}
	e.wfm.Publish(1, []byte(fmt.Sprintf(`id: %s
metadata: {name: line, namespace: margo, deviceId: press-42}
spec:
  applicationId: acme-line
  deploymentProfile:
    type: compose
    components:
      - {name: db, properties: {repository: oci://%[2]s/acme/a, revision: 1.0.0}}
      - {name: api, properties: {repository: oci://%[2]s/acme/a, revision: 1.0.0, wait: false, timeout: 2m30s}}
      - {name: ui, properties: {repository: oci://%[2]s/acme/a, revision: 1.0.0, wait: true, timeout: 0m45s}}
`, depA, e.host)))
	global := fmt.Sprintf(`margo:
  wfm: %s
  deviceId: press-42
  identity: {cert: %s, key: %s, trustBundle: %s}
  verify: {keys: [%s]}
  insecure: true
  device: {vendor: Acme, modelNumber: E-100, serialNumber: SN1, interfaces: [ethernet]}
apply:
  compose: {}
`, e.wfm.URL, e.ids.Cert, e.ids.Key, e.ids.Bundle, e.pub)
	a := newAgent(t, e.config(global), ap)
	if r := e.once(a); r.Outcome != "applied" || r.Error != "" {
		t.Fatalf("install: %+v", r)
	}
	if len(ap.apps) != 1 {
		t.Fatalf("%d applies, want 1", len(ap.apps))
	}
	type got struct {
		name    string
		noWait  bool
		timeout time.Duration
	}
	var apps []got
	for _, app := range ap.apps[0] {
		if app.Compose == nil {
			t.Fatalf("app %s is not a Compose app", app.Name)
		}
		apps = append(apps, got{app.Name, app.Compose.NoWait, app.Compose.Timeout})
	}
	want := []got{{"line-db", false, 0}, {"line-api", true, 150 * time.Second}, {"line-ui", false, 45 * time.Second}}
	if !slices.Equal(apps, want) {
		t.Errorf("apps %+v, want %+v (listed order, each component's wait and timeout)", apps, want)
	}
	e.checkViolations()
}
