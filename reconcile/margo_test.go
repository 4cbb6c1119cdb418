package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/config"
	"github.com/berth-dev/berth/source/margo"
	"github.com/berth-dev/berth/source/margo/margotest"
	"github.com/berth-dev/berth/source/margo/pack"
	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/state"
)

// appsApplier is the appliers' double for the Margo loop: it reports one
// status per app, fails an app whose compose.yaml says FAIL, reports the
// apps prev had and rev has not as pruned, and records its calls.
type appsApplier struct {
	mu    sync.Mutex
	calls []appsCall
}

type appsCall struct {
	rev, prev string   // digests; prev "" for none
	apps      []string // app names of rev
	failed    []string
}

func (a *appsApplier) Kind() string { return "compose" }

func (a *appsApplier) Apply(_ context.Context, rev state.Revision, prev *state.Revision) ([]state.AppStatus, error) {
	c := appsCall{rev: rev.Digest}
	if prev != nil {
		c.prev = prev.Digest
	}
	var out []state.AppStatus
	var errs []error
	for _, app := range rev.State.Apps {
		c.apps = append(c.apps, app.Name)
		data, err := os.ReadFile(filepath.Join(rev.Dir, app.Compose.Path, "compose.yaml"))
		if err != nil || strings.Contains(string(data), "FAIL") {
			err = fmt.Errorf("app %q: service \"web\": container exited (exit code 1); rolled back", app.Name)
			c.failed = append(c.failed, app.Name)
			errs = append(errs, err)
			out = append(out, state.AppStatus{Name: app.Name, Kind: "compose", Outcome: "failed", Message: err.Error()})
			continue
		}
		out = append(out, state.AppStatus{Name: app.Name, Kind: "compose", Outcome: "applied"})
	}
	if prev != nil && prev.State != nil && len(errs) == 0 {
		for _, p := range prev.State.Apps {
			if !slices.ContainsFunc(rev.State.Apps, func(x state.App) bool { return x.Name == p.Name }) {
				out = append(out, state.AppStatus{Name: p.Name, Kind: "compose", Outcome: "pruned"})
			}
		}
	}
	a.mu.Lock()
	a.calls = append(a.calls, c)
	a.mu.Unlock()
	return out, errors.Join(errs...)
}

func (a *appsApplier) log() []appsCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

// margoEnv is a test WFM, an in-process registry holding Compose
// Archives, and an agent configured with a margo block.
type margoEnv struct {
	*env
	wfm *margotest.WFM
	ids margotest.Files
	ap  *appsApplier
}

const (
	depA = "0b6c1f1e-2a44-4c7e-9d51-7e3f5a0c9b21"
	depB = "1b6c1f1e-2a44-4c7e-9d51-7e3f5a0c9b21"
)

func newMargoEnv(t *testing.T) *margoEnv {
	t.Helper()
	e := &margoEnv{env: newEnv(t), wfm: margotest.Start(t, margotest.Options{}), ap: &appsApplier{}}
	e.ids = e.wfm.ClientFiles(t, filepath.Join(e.dir, "id"), "press-42")
	return e
}

// archive pushes a signed Compose Archive whose compose.yaml holds body.
func (e *margoEnv) archive(repo, rev, body string, signed bool) {
	e.t.Helper()
	dir := e.t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte("services:\n  web: {image: x:1}\n# "+body+"\n"), 0o644); err != nil {
		e.t.Fatal(err)
	}
	ref, _ := oci.ParseReference("oci://" + e.host + "/" + repo + ":" + rev)
	p, err := pack.PushComposeArchive(context.Background(), e.client, pack.ComposeOptions{Dir: dir, Ref: ref})
	if err != nil {
		e.t.Fatal(err)
	}
	if signed {
		e.sign(repo, p.Digest)
	}
}

// deployment is an ApplicationDeployment with one Compose component web.
func (e *margoEnv) deployment(id, name, repo, rev string) []byte {
	return []byte(fmt.Sprintf(`id: %s
metadata: {name: %s, namespace: margo, deviceId: press-42}
spec:
  applicationId: acme-%s
  deploymentProfile:
    type: compose
    components:
      - name: web
        properties: {repository: oci://%s/%s, revision: %s}
  parameters:
    greeting: {value: hi, targets: [{pointer: GREETING, components: [web]}]}
`, id, name, name, e.host, repo, rev))
}

func (e *margoEnv) agent() *Agent {
	e.t.Helper()
	return e.agentWith("", "")
}

// agentWith is agent with more top-level settings (top, lines ending in a
// newline) and settings of the margo block (margo, "  key: value\n"
// lines).
func (e *margoEnv) agentWith(top, margo string) *Agent {
	e.t.Helper()
	global := fmt.Sprintf(`%smargo:
  wfm: %s
  deviceId: press-42
  identity: {cert: %s, key: %s, trustBundle: %s}
  interval: 1m
  verify: {keys: [%s]}
  insecure: true
  device: {vendor: Acme, modelNumber: E-100, serialNumber: SN1, interfaces: [ethernet]}
%sapply:
  compose: {}
`, top, e.wfm.URL, e.ids.Cert, e.ids.Key, e.ids.Bundle, e.pub, margo)
	a := newAgent(e.t, e.config(global), e.ap)
	return a
}

// once reconciles the Margo source once.
func (e *margoEnv) once(a *Agent) apiResult {
	e.t.Helper()
	res, err := a.ReconcileNow(context.Background(), MargoSource, api.ReconcileOptions{})
	if err != nil || len(res) != 1 {
		e.t.Fatalf("ReconcileNow: %v %+v", err, res)
	}
	return res[0]
}

func (e *margoEnv) margoState() *margo.State {
	e.t.Helper()
	st, err := margo.LoadState(filepath.Join(e.dir, "state", "margo", "state.json"))
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// states are the status posts the WFM received for id, as "state" or
// "state/component state".
func (e *margoEnv) states(id string) []string {
	var out []string
	for _, s := range e.wfm.Statuses() {
		if s.DeploymentID == id {
			out = append(out, s.State)
		}
	}
	return out
}

func (e *margoEnv) checkViolations() {
	e.t.Helper()
	if v := e.wfm.Violations(); len(v) > 0 {
		e.t.Errorf("the WFM found schema violations in what the agent sent: %v", v)
	}
}

// TestMargoLifecycle: install two deployments, update one (only its YAML
// fetched), a failed apply put back on the previous revision and retried,
// a removal, then a stale manifest refused.
func TestMargoLifecycle(t *testing.T) {
	e := newMargoEnv(t)
	e.archive("acme/a", "1.0.0", "a1", true)
	e.archive("acme/a", "2.0.0", "a2", true)
	e.archive("acme/a", "3.0.0", "a3 FAIL", true)
	e.archive("acme/b", "1.0.0", "b1", true)
	e.wfm.Publish(1, e.deployment(depA, "alpha", "acme/a", "1.0.0"), e.deployment(depB, "beta", "acme/b", "1.0.0"))
	a := e.agent()

	r := e.once(a)
	if r.Outcome != "applied" || r.Error != "" {
		t.Fatalf("install: %+v", r)
	}
	if got := e.states(depA); !slices.Equal(got, []string{"installing", "installed"}) {
		t.Errorf("statuses of A = %v", got)
	}
	if caps, ok := e.wfm.Capabilities("press-42"); !ok || caps["properties"].(map[string]any)["vendor"] != "Acme" {
		t.Errorf("capabilities = %v", caps)
	}
	st := e.margoState()
	v1 := current(t, a, MargoSource)
	if st.ManifestVersion != 1 || len(st.Deployments) != 2 || st.Revision != v1 || v1 == "" {
		t.Fatalf("accepted state = %+v, current %s", st, v1)
	}
	calls := e.ap.log()
	if len(calls) != 1 || calls[0].rev != v1 || calls[0].prev != "" || !slices.Equal(calls[0].apps, []string{"alpha-web", "beta-web"}) {
		t.Fatalf("apply calls = %+v", calls)
	}
	// Unchanged: 304, nothing applied.
	if r := e.once(a); r.Outcome != "unchanged" || len(e.ap.log()) != 1 {
		t.Fatalf("unchanged: %+v, %d applies", r, len(e.ap.log()))
	}

	// Update A only: only A's YAML is fetched.
	mark := len(e.wfm.Requests())
	e.wfm.Publish(2, e.deployment(depA, "alpha", "acme/a", "2.0.0"), e.deployment(depB, "beta", "acme/b", "1.0.0"))
	if r := e.once(a); r.Outcome != "applied" || r.Error != "" {
		t.Fatalf("update: %+v", r)
	}
	var gets []string
	for _, req := range e.wfm.Requests()[mark:] {
		if req.Method == "GET" {
			gets = append(gets, req.Path)
		}
	}
	if len(gets) != 2 || gets[0] != "/api/v1/deployments" || !strings.HasPrefix(gets[1], "/api/v1/deployments/"+depA+"/sha256:") {
		t.Errorf("the update fetched %v, want the manifest and A's YAML only", gets)
	}
	if got := e.states(depB); len(got) != 2 {
		t.Errorf("B, unchanged, got status posts %v", got)
	}
	v2 := current(t, a, MargoSource)
	if st := e.margoState(); st.ManifestVersion != 2 || st.Deployments[depA].AdoptedManifestVersion != 2 || st.Deployments[depB].AdoptedManifestVersion != 1 {
		t.Fatalf("after the update: %+v", st)
	}

	// A 3.0.0 fails to apply: A goes back to 2.0.0, reported failed; the
	// accepted state keeps A at its previous digest, so it is retried.
	e.wfm.Publish(3, e.deployment(depA, "alpha", "acme/a", "3.0.0"), e.deployment(depB, "beta", "acme/b", "1.0.0"))
	r = e.once(a)
	if r.Outcome != "applied" || !strings.Contains(r.Error, "deployment alpha ("+depA+") failed and is back on its previous revision") {
		t.Fatalf("failed update: %+v", r)
	}
	calls = e.ap.log()
	last, back := calls[len(calls)-2], calls[len(calls)-1]
	if !slices.Equal(last.failed, []string{"alpha-web"}) || back.prev != last.rev || len(back.failed) != 0 {
		t.Fatalf("apply calls: %+v then %+v", last, back)
	}
	v3 := current(t, a, MargoSource)
	if v3 != back.rev || v3 == v2 {
		t.Fatalf("current = %s, want the put-back revision %s", v3, back.rev)
	}
	stA := e.wfm.Statuses()
	lastA := stA[len(stA)-1]
	if lastA.DeploymentID != depA || lastA.State != "failed" || lastA.AdoptedManifestVersion != 2 || !strings.Contains(fmt.Sprint(lastA.Components[0].Error), "exit code 1") {
		t.Errorf("last status = %+v", lastA)
	}
	st = e.margoState()
	if st.ManifestVersion != 3 || st.Deployments[depA].AdoptedManifestVersion != 2 || st.Revision != v3 {
		t.Fatalf("after the failed update: %+v", st)
	}
	// Retried on the next explicit reconcile (the WFM answers 304).
	if r := e.once(a); !strings.Contains(r.Error, "failed and is back") {
		t.Errorf("retry: %+v", r)
	}

	// B removed from the manifest: removing, then removed; A back at 2.0.0.
	e.wfm.Publish(4, e.deployment(depA, "alpha", "acme/a", "2.0.0"))
	if r := e.once(a); r.Outcome != "applied" || r.Error != "" {
		t.Fatalf("removal: %+v", r)
	}
	if got := e.states(depB); !slices.Equal(got[len(got)-2:], []string{"removing", "removed"}) {
		t.Errorf("statuses of B = %v", got)
	}
	if s := lastStatus(e.wfm, depB); s.AdoptedManifestVersion != 4 || len(s.Components) != 1 || s.Components[0].State != "removed" {
		t.Errorf("removal status of B = %+v, want removed at adopted manifestVersion 4", s)
	}
	if st := e.margoState(); len(st.Deployments) != 1 || st.ManifestVersion != 4 {
		t.Errorf("after the removal: %+v", st)
	}

	// A stale manifest is refused and changes nothing.
	before := current(t, a, MargoSource)
	e.wfm.Publish(3, e.deployment(depA, "alpha", "acme/a", "1.0.0"))
	if r := e.once(a); r.Outcome != "refused" || !strings.Contains(r.Error, "manifestVersion 3, not greater than the accepted 4") {
		t.Fatalf("stale manifest: %+v", r)
	}
	if current(t, a, MargoSource) != before || e.margoState().ManifestVersion != 4 {
		t.Error("a stale manifest changed the device")
	}

	// berth status shows the Margo source like the others.
	stat := a.Status()
	var ms *struct {
		Detail json.RawMessage
	}
	for _, s := range stat.Sources {
		if s.Name == MargoSource {
			ms = &struct{ Detail json.RawMessage }{s.Detail}
			if s.URL != e.wfm.URL || s.Applied == nil || s.Applied.Digest != before || s.Last == nil || s.Last.Outcome != "refused" {
				t.Errorf("status of the Margo source = %+v", s)
			}
		}
	}
	if ms == nil || !strings.Contains(string(ms.Detail), `"manifestVersion":4`) {
		t.Errorf("status detail = %+v", ms)
	}
	if err := a.Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}
	e.checkViolations()
}

// TestMargoRefusedComponent: an unsigned component under a verify policy
// is refused, reported failed, and what ran keeps running.
func TestMargoRefusedComponent(t *testing.T) {
	e := newMargoEnv(t)
	e.archive("acme/a", "1.0.0", "a1", true)
	e.archive("acme/a", "2.0.0", "a2", false)
	e.wfm.Publish(1, e.deployment(depA, "alpha", "acme/a", "1.0.0"))
	a := e.agent()
	if r := e.once(a); r.Error != "" {
		t.Fatal(r)
	}
	v1 := current(t, a, MargoSource)
	e.wfm.Publish(2, e.deployment(depA, "alpha", "acme/a", "2.0.0"))
	r := e.once(a)
	if !strings.Contains(r.Error, "no signature") || !strings.Contains(r.Error, "acme/a") {
		t.Fatalf("unsigned update: %+v", r)
	}
	last := e.wfm.Statuses()[len(e.wfm.Statuses())-1]
	if last.State != "failed" || last.Components[0].Error["code"] != "CONTENT_REFUSED" || last.AdoptedManifestVersion != 1 {
		t.Errorf("status = %+v", last)
	}
	// The revision in force still runs A 1.0.0 (carried over).
	cur := current(t, a, MargoSource)
	rev, err := a.margo.revision(cur)
	if err != nil || rev.plan.Deployments[0].Components[0].Revision != "1.0.0" || !rev.plan.Deployments[0].Carried {
		t.Fatalf("in force: %+v %v (was %s)", rev, err, v1)
	}
	if st := e.margoState(); st.Deployments[depA].AdoptedManifestVersion != 1 || st.ManifestVersion != 2 {
		t.Errorf("accepted = %+v", st)
	}
	e.checkViolations()
}

// TestMargoStatusOutage: status posts the WFM cannot take are queued on
// disk, survive a restart, and are delivered in order afterwards.
func TestMargoStatusOutage(t *testing.T) {
	e := newMargoEnv(t)
	e.archive("acme/a", "1.0.0", "a1", true)
	e.archive("acme/b", "1.0.0", "b1", true)
	e.wfm.Publish(1, e.deployment(depA, "alpha", "acme/a", "1.0.0"), e.deployment(depB, "beta", "acme/b", "1.0.0"))
	e.wfm.Fail(margotest.Fault{Method: "POST", Path: "/api/v1/deployments/", Status: 503, RetryAfter: "1"})
	a := e.agent()
	if r := e.once(a); r.Outcome != "applied" {
		t.Fatal(r)
	}
	if n := len(e.wfm.Statuses()); n != 0 {
		t.Fatalf("%d statuses accepted during the outage", n)
	}
	if n := a.margo.rep.Pending(); n != 4 {
		t.Fatalf("%d status posts queued, want 4", n)
	}
	// A restart keeps them; once the WFM takes posts, they arrive in order,
	// after the capabilities (the first call after connecting).
	a = e.agent()
	e.wfm.ClearFaults()
	mark := len(e.wfm.Requests())
	if r := e.once(a); r.Outcome != "unchanged" {
		t.Fatal(r)
	}
	if first := e.wfm.Requests()[mark]; first.Method != "PUT" || first.Path != "/api/v1/capabilities/press-42" {
		t.Errorf("first request after the restart: %s %s, want the capabilities", first.Method, first.Path)
	}
	var got []string
	for _, s := range e.wfm.Statuses() {
		got = append(got, s.DeploymentID[:1]+":"+s.State)
	}
	if want := []string{"0:installing", "1:installing", "0:installed", "1:installed"}; !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
	e.checkViolations()
}

// TestMargoInterruptedApply: an agent stopped between the switch and the
// save of the accepted state (the state of a kill -9 during apply) puts
// the previous revision back at the next start, then takes the update
// again.
func TestMargoInterruptedApply(t *testing.T) {
	e := newMargoEnv(t)
	e.archive("acme/a", "1.0.0", "a1", true)
	e.archive("acme/a", "2.0.0", "a2", true)
	e.wfm.Publish(1, e.deployment(depA, "alpha", "acme/a", "1.0.0"))
	a := e.agent()
	e.once(a)
	v1 := current(t, a, MargoSource)
	statePath := filepath.Join(e.dir, "state", "margo", "state.json")
	saved, err := os.ReadFile(statePath)
	if err != nil {
		t.Fatal(err)
	}
	e.wfm.Publish(2, e.deployment(depA, "alpha", "acme/a", "2.0.0"))
	e.once(a)
	v2 := current(t, a, MargoSource)
	// The crash: the accepted state was never saved.
	if err := os.WriteFile(statePath, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	n := len(e.ap.log())
	a = e.agent()
	if r := e.once(a); r.Outcome != "applied" || r.Error != "" {
		t.Fatalf("after the restart: %+v", r)
	}
	calls := e.ap.log()[n:]
	if len(calls) != 2 || calls[0].rev != v1 || calls[0].prev != v2 || calls[1].rev != v2 || calls[1].prev != v1 {
		t.Fatalf("applies after the restart = %+v, want v1 put back over v2, then v2 over v1", calls)
	}
	if st := e.margoState(); st.ManifestVersion != 2 || st.Revision != v2 {
		t.Errorf("accepted state = %+v", st)
	}
}

var _ = config.MargoSource
