package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/source/margo/margotest"
)

// Deployment ids the test WFM assigns.
const (
	depCompose = "6f1c3a2e-5b7d-4e8f-9a0b-1c2d3e4f5a01"
	depHelm    = "6f1c3a2e-5b7d-4e8f-9a0b-1c2d3e4f5a02"
)

// TestMargoDevice runs berth as the WFM client of a Margo WFM end to end,
// the agent restarted (agent --once) between every step: a Compose and a
// Helm deployment install with their parameters where their pointers say;
// an update of one deployment fetches only its YAML; a removal uninstalls;
// a lower manifestVersion, a YAML whose digest is wrong, an archive with a
// traversal entry, an untrusted WFM certificate, a wrong WFM SPIFFE ID and
// an unsigned component are each refused with the old state kept; status
// posts wait out a WFM outage and arrive in order. Real registry (TLS,
// htpasswd), real Docker Engine, real kube-apiserver; the WFM is the
// double of margotest, which validates every body the agent sends.
func TestMargoDevice(t *testing.T) {
	e := newEnv(t)
	d := newMargoDevice(t, e)
	kube := testenv.StartKube(t)
	ns := fmt.Sprintf("margo-%d", d.port)
	d.apply = fmt.Sprintf("apply:\n  compose: {host: %s, waitTimeout: 60s}\n  helm: {kubeconfig: %s}\n", d.docker.Host(), kube.Kubeconfig)
	d.writeConfig(d.wfm.URL)
	if out := d.ok("agent", "--config", d.cfgPath, "--check-config"); !strings.Contains(out, "valid") {
		t.Fatalf("--check-config: %s", out)
	}

	// The application package, its Compose and Helm components built,
	// pushed by digest, signed and tagged by berth margo package.
	app := filepath.Join(t.TempDir(), "line-monitor")
	if err := os.CopyFS(filepath.Join(app, "compose", "collector"), os.DirFS(d.collector("1s"))); err != nil {
		t.Fatal(err)
	}
	collector, chart := e.url("acme/collector"), e.url("acme/charts/monitor")
	mkWrite(t, filepath.Join(app, "margo.yaml"), fmt.Sprintf(`apiVersion: margo.org/v1-alpha1
kind: ApplicationDescription
id: line-monitor
metadata:
  name: Line monitor
  version: 1.0.0
  catalog: {organization: [{name: Acme}]}
deploymentProfiles:
  - {type: compose, id: compose, components: [{name: collector, properties: {repository: %s, revision: 1.0.0}}]}
  - {type: helm, id: helm, components: [{name: monitor, properties: {repository: %s, revision: 1.0.0}}]}
`, collector, chart))
	mkWrite(t, filepath.Join(app, "helm/monitor/Chart.yaml"), "apiVersion: v2\nname: monitor\nversion: 1.0.0\n")
	mkWrite(t, filepath.Join(app, "helm/monitor/values.yaml"), "settings: {greeting: default}\nlimits: {cpu: \"1\"}\n")
	mkWrite(t, filepath.Join(app, "helm/monitor/templates/configmap.yaml"), `apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}-settings}
data:
  greeting: {{ .Values.settings.greeting | quote }}
  cpu: {{ .Values.limits.cpu | quote }}
`)
	var pkg struct {
		Components []struct{ Kind, Digest string }
	}
	e.okJSON(&pkg, "margo", "package", app, e.url("acme/apps/line-monitor"), "--sign-key", e.key)
	if len(pkg.Components) != 2 {
		t.Fatalf("package pushed %+v", pkg)
	}
	helmDeployment := func(greeting string) []byte {
		return []byte(fmt.Sprintf(`id: %s
metadata: {name: monitor, namespace: %s, deviceId: %s}
spec:
  applicationId: line-monitor
  deploymentProfile:
    type: helm
    components:
      - name: monitor
        properties: {repository: %s, revision: 1.0.0, timeout: 1m0s}
  parameters:
    greeting: {value: %q, targets: [{pointer: settings.greeting, components: [monitor]}]}
    cpu: {value: 250m, targets: [{pointer: /limits/cpu, components: [monitor]}]}
`, depHelm, ns, margoDeviceID, chart, greeting))
	}
	configMap := func() map[string]string {
		cm, err := kube.Clientset.CoreV1().ConfigMaps(ns).Get(kctx(t), "monitor-monitor-settings", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return cm.Data
	}

	// 1. Install: both deployments installing, then installed; the
	// parameters are the Compose app's environment and the chart's values
	// at their pointers.
	d.wfm.Publish(1, d.composeDeployment(depCompose, collector, "1.0.0", "hello from margo"), helmDeployment("hello from margo"))
	d.expectOnce("applied", "")
	for _, id := range []string{depCompose, depHelm} {
		if got := d.states(id); !slices.Equal(got, []string{"installing", "installed"}) {
			t.Errorf("statuses of %s = %v, want installing, installed", id, got)
		}
		if s := d.lastStatus(id); s.AdoptedManifestVersion != 1 || s.DeviceID != margoDeviceID {
			t.Errorf("status of %s = %+v", id, s)
		}
	}
	d.expectServing("hello from margo")
	if cm := configMap(); cm["greeting"] != "hello from margo" || cm["cpu"] != "250m" {
		t.Errorf("the chart's values = %v, want the parameters at settings.greeting and /limits/cpu", cm)
	}
	caps, ok := d.wfm.Capabilities(margoDeviceID)
	if props, _ := caps["properties"].(map[string]any); !ok || props["vendor"] != "Acme" || !strings.Contains(fmt.Sprint(props["supportedDeploymentTypes"]), "helm") {
		t.Errorf("capabilities = %v", caps)
	}
	// berth status (no agent runs: from state.json) shows the Margo source
	// like any other.
	st, text := d.status()
	if st.Applied == nil || st.Applied.Version != "1" || st.Applied.Digest != d.current() || len(st.Applied.Apps) != 2 {
		t.Errorf("status --output json = %+v", st)
	}
	if !strings.Contains(text, "source margo") || !strings.Contains(text, "app line-monitor-collector (compose): applied") || !strings.Contains(text, "app monitor-monitor (helm): applied") {
		t.Errorf("status:\n%s", text)
	}

	// 2. Restart with nothing new: the persisted ETag, a 304, nothing else.
	mark := len(d.wfm.Requests())
	d.expectOnce("unchanged", "")
	if gets := d.gets(mark); len(gets) != 1 {
		t.Errorf("unchanged restart: GETs %v, want the manifest only", gets)
	}
	for _, r := range d.wfm.Requests()[mark:] {
		if r.Method == "GET" && (r.Status != 304 || r.Header.Get("If-None-Match") != d.accepted().ETag || d.accepted().ETag == "") {
			t.Errorf("unchanged restart: GET %s with If-None-Match %q answered %d, want the persisted ETag %q and 304", r.Path, r.Header.Get("If-None-Match"), r.Status, d.accepted().ETag)
		}
	}

	// 3. Update the Compose deployment only: only its YAML is fetched; the
	// Helm deployment gets no status.
	e.ok("margo", "compose-archive", d.collector("1s"), collector+":1.1.0", "--sign-key", e.key)
	mark, helmPosts := len(d.wfm.Requests()), len(d.states(depHelm))
	d.wfm.Publish(2, d.composeDeployment(depCompose, collector, "1.1.0", "updated by margo"), helmDeployment("hello from margo"))
	d.expectOnce("applied", "")
	if gets := d.gets(mark); len(gets) != 2 || gets[0] != "/api/v1/deployments" || !strings.HasPrefix(gets[1], "/api/v1/deployments/"+depCompose+"/sha256:") {
		t.Errorf("the update fetched %v, want the manifest and the Compose deployment's YAML only", gets)
	}
	d.expectServing("updated by margo")
	if n := len(d.states(depHelm)); n != helmPosts {
		t.Errorf("the unchanged Helm deployment got %d more status posts", n-helmPosts)
	}
	if a := d.accepted(); a.ManifestVersion != 2 || a.Deployments[depCompose].AdoptedManifestVersion != 2 || a.Deployments[depHelm].AdoptedManifestVersion != 1 {
		t.Errorf("accepted state = %+v", a)
	}

	// 4. Removal: the Helm deployment is no longer listed: uninstalled,
	// removing then removed.
	d.wfm.Publish(3, d.composeDeployment(depCompose, collector, "1.1.0", "updated by margo"))
	d.expectOnce("applied", "")
	if got := d.states(depHelm); !slices.Equal(got[len(got)-2:], []string{"removing", "removed"}) {
		t.Errorf("statuses of the removed deployment = %v", got)
	}
	if cm := configMap(); cm != nil {
		t.Errorf("the removed release's ConfigMap is still there: %v", cm)
	}
	if a := d.accepted(); len(a.Deployments) != 1 || a.ManifestVersion != 3 {
		t.Errorf("accepted state after the removal = %+v", a)
	}

	// 5. Refusals: each leaves the app and the accepted state as they are.
	kept := func(what string, version uint64) {
		t.Helper()
		if a := d.accepted(); a.ManifestVersion != version || a.Deployments[depCompose].AdoptedManifestVersion != 2 {
			t.Errorf("%s: accepted state = %+v", what, a)
		}
		d.expectServing("updated by margo")
	}
	inForce := d.current()

	// A lower manifestVersion: a replay or rollback.
	d.wfm.Publish(2, d.composeDeployment(depCompose, collector, "1.0.0", "rolled back by an attacker"))
	d.expectOnce("refused", "manifestVersion 2, not greater than the accepted 3")
	kept("lower manifestVersion", 3)

	// A YAML whose bytes do not match the manifest's digest.
	bad := d.composeDeployment(depCompose, collector, "1.1.0", "tampered")
	d.wfm.Publish(4, bad)
	d.wfm.Corrupt(margotest.Digest(bad), d.composeDeployment(depCompose, collector, "1.1.0", "tampered in transit"))
	d.expectOnce("refused", "digest mismatch")
	kept("wrong YAML digest", 3)

	// A Compose Archive with a traversal entry (signed all the same).
	d.signedRaw("acme/collector", "6.6.6", traversalArchive(t, "services: {}\n"))
	d.wfm.Publish(5, d.composeDeployment(depCompose, collector, "6.6.6", "escaped"))
	d.expectOnce("applied", "unsafe path")
	if s := d.lastStatus(depCompose); s.State != "failed" || s.AdoptedManifestVersion != 2 || !strings.Contains(fmt.Sprint(s.Components[0].Error), "CONTENT_REFUSED") {
		t.Errorf("status of the refused archive = %+v", s)
	}
	if _, err := os.Stat("/tmp/berth-margo-escaped"); err == nil {
		t.Error("the traversal entry was written")
	}
	kept("traversal entry", 5)

	// An unsigned component under the verify policy.
	e.ok("margo", "compose-archive", d.collector("1s"), collector+":1.2.0")
	d.wfm.Publish(6, d.composeDeployment(depCompose, collector, "1.2.0", "unsigned"))
	d.expectOnce("applied", "no signature")
	if s := d.lastStatus(depCompose); s.State != "failed" || !strings.Contains(fmt.Sprint(s.Error), "acme/collector") {
		t.Errorf("status of the unsigned component = %+v", s)
	}
	kept("unsigned component", 6)

	// A WFM whose certificate does not chain to the trust bundle, and one
	// that chains but carries another WFM's SPIFFE ID.
	untrusted := margotest.Start(t, margotest.Options{})
	d.writeConfig(untrusted.URL)
	d.expectOnce("error", "does not verify against the trust bundle")
	other := margotest.Start(t, margotest.Options{ServerCA: d.wfm.CA, ServerID: "spiffe://plant.example/margo/wfm/impostor"})
	d.writeConfig(other.URL)
	d.expectOnce("error", "spiffe://plant.example/margo/wfm/impostor")
	if n := len(untrusted.Requests()) + len(other.Requests()); n != 0 {
		t.Errorf("the agent sent %d requests to WFMs it must not trust", n)
	}
	d.writeConfig(d.wfm.URL)
	kept("untrusted WFMs", 6)
	if d.current() == "" || inForce == "" {
		t.Fatal("no revision in force")
	}

	// 6. A WFM outage for status posts: they are queued on disk (across
	// restarts) and delivered in order once the WFM takes them.
	d.wfm.Fail(margotest.Fault{Method: "POST", Path: "/api/v1/deployments/", Status: 503, RetryAfter: "1"})
	posted := len(d.wfm.Statuses())
	e.ok("margo", "compose-archive", d.collector("1s"), collector+":1.3.0", "--sign-key", e.key)
	d.wfm.Publish(7, d.composeDeployment(depCompose, collector, "1.3.0", "after the outage"))
	d.expectOnce("applied", "")
	d.expectServing("after the outage")
	if q := d.queued(); q != 2 || len(d.wfm.Statuses()) != posted {
		t.Fatalf("during the outage: %d queued on disk, %d delivered", q, len(d.wfm.Statuses())-posted)
	}
	d.wfm.ClearFaults()
	d.expectOnce("unchanged", "")
	var got []string
	for _, s := range d.wfm.Statuses()[posted:] {
		got = append(got, fmt.Sprintf("%s@%d", s.State, s.AdoptedManifestVersion))
	}
	if want := []string{"installing@7", "installed@7"}; !slices.Equal(got, want) {
		t.Errorf("delivered after the outage: %v, want %v", got, want)
	}
	if v := d.wfm.Violations(); len(v) > 0 {
		t.Errorf("the WFM found schema violations in the agent's requests: %v", v)
	}
}
