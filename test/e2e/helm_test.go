package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/internal/testenv"
)

// helmEnv is a registry, a publisher whose repository starts as
// examples/helm-hello, a kube-apiserver with its etcd, and a device agent
// applying Helm apps with the kubeconfig of testenv.KubeAgentUser.
type helmEnv struct {
	*agentEnv
	kube      *testenv.Kube
	valuesDir string // the device-local values folder (apply.helm.valuesDir)
}

// The release the example installs, and its objects.
const (
	helmNS        = "hello"
	helmRelease   = "hello"
	helmConfigMap = "hello-greeting"
	helmService   = "hello"
	helmSecret    = "hello-api"
)

func newHelmEnv(t *testing.T) *helmEnv {
	t.Helper()
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "fleet")
	if err := testenv.CopyDir(filepath.Join(testenv.ModuleRoot(t), "examples", "helm-hello"), src); err != nil {
		t.Fatal(err)
	}
	h := &helmEnv{
		agentEnv:  &agentEnv{env: e, repo: testenv.GitRepo(t, src), stateDir: filepath.Join(t.TempDir(), "state")},
		kube:      testenv.StartKube(t),
		valuesDir: filepath.Join(t.TempDir(), "values"),
	}
	if err := os.MkdirAll(h.valuesDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// Device-local values: on top of the artifact's, never in it.
	if err := os.WriteFile(filepath.Join(h.valuesDir, "hello.yaml"), []byte("device: station-7\napiToken: device-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.writeConfig("ref: {tag: stable}", fmt.Sprintf("apply:\n  helm: {kubeconfig: %s, valuesDir: %s}", h.kube.Kubeconfig, h.valuesDir))
	return h
}

// state rewrites berth.yaml with one Helm app "hello" from charts/hello
// whose inline greeting is greeting and whose timeout is short; deployment
// adds a Deployment to the chart, which never becomes ready (there is no
// kubelet). Without an app (greeting ""), berth.yaml lists none.
func (h *helmEnv) state(greeting string, deployment bool) {
	h.t.Helper()
	apps := "apps: []\n"
	if greeting != "" {
		apps = fmt.Sprintf(`apps:
  - name: hello
    helm:
      path: charts/hello
      namespace: %s
      valuesFiles: [values/line-3.yaml]
      values: {greeting: %q}
      timeout: 5s
`, helmNS, greeting)
	}
	h.write("berth.yaml", "apiVersion: berth.dev/v1\nkind: DeviceState\n"+apps)
	dep := filepath.Join(h.repo, "charts", "hello", "templates", "deployment.yaml")
	if !deployment {
		if err := os.Remove(dep); err != nil && !os.IsNotExist(err) {
			h.t.Fatal(err)
		}
		return
	}
	h.write("charts/hello/templates/deployment.yaml", `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-worker
spec:
  replicas: 1
  selector:
    matchLabels: {app: {{ .Release.Name }}-worker}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}-worker}
    spec:
      containers:
        - name: worker
          image: registry.invalid/never-pulled:1.0
`)
}

func (h *helmEnv) write(rel, content string) {
	h.t.Helper()
	p := filepath.Join(h.repo, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func kctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// configMap returns the data of the release's ConfigMap, nil when it does
// not exist.
func (h *helmEnv) configMap() map[string]string {
	h.t.Helper()
	cm, err := h.kube.Clientset.CoreV1().ConfigMaps(helmNS).Get(kctx(h.t), helmConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		h.t.Fatalf("get configmap %s/%s: %v", helmNS, helmConfigMap, err)
	}
	return cm.Data
}

// exists reports whether an object of the release exists.
func (h *helmEnv) exists(get func(context.Context, string, metav1.GetOptions) error, name string) bool {
	h.t.Helper()
	err := get(kctx(h.t), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false
	}
	if err != nil {
		h.t.Fatalf("get %s: %v", name, err)
	}
	return true
}

func (h *helmEnv) serviceExists() bool {
	return h.exists(func(ctx context.Context, n string, o metav1.GetOptions) error {
		_, err := h.kube.Clientset.CoreV1().Services(helmNS).Get(ctx, n, o)
		return err
	}, helmService)
}

func (h *helmEnv) deploymentExists() bool {
	return h.exists(func(ctx context.Context, n string, o metav1.GetOptions) error {
		_, err := h.kube.Clientset.AppsV1().Deployments(helmNS).Get(ctx, n, o)
		return err
	}, helmRelease+"-worker")
}

// releaseRecords returns the Helm release records of the release
// (Secrets sh.helm.release.v1.<release>.v<revision>) by revision.
func (h *helmEnv) releaseRecords() map[string]string {
	h.t.Helper()
	list, err := h.kube.Clientset.CoreV1().Secrets(helmNS).List(kctx(h.t), metav1.ListOptions{LabelSelector: "owner=helm,name=" + helmRelease})
	if err != nil {
		h.t.Fatalf("list release records: %v", err)
	}
	out := map[string]string{}
	for _, s := range list.Items {
		out[s.Labels["version"]] = s.Labels["status"]
	}
	return out
}

// helmAppStatus is one app of `berth status --output json`, with the Helm
// applier's detail.
type helmAppStatus struct {
	Name, Kind, Outcome, Message string
	Detail                       map[string]any
}

// appStatus returns the Helm app "hello" of the applied revision in
// `berth status --output json`.
func (h *helmEnv) appStatus() helmAppStatus {
	h.t.Helper()
	out, errOut, code := testenv.Run(h.t, h.bin, nil, "status", "--config", h.cfgPath, "--output", "json")
	var st struct {
		Sources []struct {
			Applied *struct {
				Digest string
				Apps   []helmAppStatus
			}
		}
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Sources) != 1 || st.Sources[0].Applied == nil {
		h.t.Fatalf("status: exit %d %q %s", code, out, errOut)
	}
	for _, a := range st.Sources[0].Applied.Apps {
		if a.Name == "hello" {
			return a
		}
	}
	h.t.Fatalf("status shows no app hello: %s", out)
	return helmAppStatus{}
}

// lastAttempt returns the last reconcile of the source in `berth status
// --output json`, with its apps.
func (h *helmEnv) lastAttempt() (last struct {
	Outcome, Digest, Error string
	Apps                   []helmAppStatus
}) {
	h.t.Helper()
	out, errOut, code := testenv.Run(h.t, h.bin, nil, "status", "--config", h.cfgPath, "--output", "json")
	var st struct {
		Sources []struct {
			Last *struct {
				Outcome, Digest, Error string
				Apps                   []helmAppStatus
			}
		}
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Sources) != 1 || st.Sources[0].Last == nil {
		h.t.Fatalf("status: exit %d %q %s", code, out, errOut)
	}
	return *st.Sources[0].Last
}

// expectRelease checks what status says of the release.
func (h *helmEnv) expectRelease(revision int, status string) {
	h.t.Helper()
	a := h.appStatus()
	d := a.Detail
	if a.Kind != "helm" || a.Outcome != "applied" || d == nil {
		h.t.Fatalf("status of hello = %+v, want a helm app applied", a)
	}
	if d["release"] != helmRelease || d["namespace"] != helmNS || !strings.HasPrefix(fmt.Sprint(d["chart"]), "hello") ||
		d["revision"] != float64(revision) || d["status"] != status {
		h.t.Fatalf("status of hello: detail %v, want release %s in %s, chart hello, revision %d, status %s", d, helmRelease, helmNS, revision, status)
	}
}

// TestHelmLifecycle: install, upgrade, a release that never becomes ready
// rolled back, unchanged revisions sending no write, prune.
func TestHelmLifecycle(t *testing.T) {
	h := newHelmEnv(t)
	user := testenv.KubeAgentUser

	// v1: installed from the chart folder in the artifact, the namespace
	// created; values from the chart, valuesFiles, berth.yaml and the
	// device's own file.
	h.state("v1", false)
	v1 := h.publish("stable", h.key, 1)
	h.expectApplied(v1)
	cm := h.configMap()
	if cm["greeting"] != "v1" || cm["site"] != "plant-1/line-3" || cm["device"] != "station-7" {
		t.Fatalf("configmap after v1 = %v", cm)
	}
	if !h.serviceExists() {
		t.Fatal("service missing after v1")
	}
	sec, err := h.kube.Clientset.CoreV1().Secrets(helmNS).Get(kctx(t), helmSecret, metav1.GetOptions{})
	if err != nil || string(sec.Data["token"]) != "device-secret" {
		t.Fatalf("secret after v1 = %v, %v; want the device-local token", sec, err)
	}
	h.expectRelease(1, "deployed")

	// v2: new values upgrade the release to revision 2.
	h.state("v2", false)
	v2 := h.publish("stable", h.key, 2)
	h.expectApplied(v2)
	if cm := h.configMap(); cm["greeting"] != "v2" {
		t.Fatalf("configmap after v2 = %v", cm)
	}
	h.expectRelease(2, "deployed")
	if recs := h.releaseRecords(); recs["2"] != "deployed" || recs["1"] != "superseded" {
		t.Fatalf("release records after v2 = %v", recs)
	}

	// The same digest again: nothing is sent to the API server.
	mark := h.kube.Mark()
	if res, code := h.once(); code != 0 || res.Outcome != "unchanged" {
		t.Fatalf("agent --once on v2 again = %+v (exit %d), want unchanged", res, code)
	}
	if w := h.kube.Writes(t, mark, user); len(w) != 0 {
		t.Fatalf("an unchanged revision sent %d writes: %v", len(w), w)
	}

	// A new artifact whose Helm app is unchanged (only VERSION differs):
	// applied, and still no write (chart digest and values are the same).
	mark = h.kube.Mark()
	v2b := h.publish("stable", h.key, 3)
	h.expectApplied(v2b)
	if w := h.kube.Writes(t, mark, user); len(w) != 0 {
		t.Fatalf("a revision with the app unchanged sent %d writes: %v", len(w), w)
	}
	h.expectRelease(2, "deployed")

	// v3 adds a Deployment that never becomes ready: the upgrade times out
	// (5s), the release is rolled back to v2's manifest, the failure names
	// the Deployment, and the device stays on v2.
	h.state("v3", true)
	v3 := h.publish("stable", h.key, 4)
	start := time.Now()
	res, code := h.once()
	if code == 0 || res.Outcome != "failed" || res.Digest != v3 || !strings.Contains(res.Error, "hello-worker") {
		t.Fatalf("v3 = %+v (exit %d), want failed naming the Deployment hello-worker", res, code)
	}
	t.Logf("v3 failed as expected after %s: %s", time.Since(start).Round(time.Second), res.Error)
	if d := time.Since(start); d > 90*time.Second {
		t.Errorf("the failed apply took %s with a 5s timeout", d)
	}
	if c := h.current(); c != v2b {
		t.Fatalf("current = %s after a failed apply, want %s", c, v2b)
	}
	if cm := h.configMap(); cm["greeting"] != "v2" {
		t.Fatalf("configmap after the rollback = %v, want v2's", cm)
	}
	if h.deploymentExists() {
		t.Fatal("the Deployment of the failed v3 is still there after the rollback")
	}
	recs := h.releaseRecords()
	if recs["3"] != "failed" {
		t.Fatalf("release records after the rollback = %v, want revision 3 failed", recs)
	}
	deployed := 0
	for _, s := range recs {
		if s == "deployed" {
			deployed++
		}
	}
	if deployed != 1 {
		t.Fatalf("release records after the rollback = %v, want one deployed", recs)
	}
	// status: the last attempt failed, its Helm app names what was not
	// ready; what status records for the applied revision is v2b's.
	last := h.lastAttempt()
	if last.Outcome != "failed" || last.Digest != v3 || len(last.Apps) != 1 || last.Apps[0].Outcome != "failed" {
		t.Fatalf("status.last after v3 = %+v", last)
	}
	if nr := fmt.Sprint(last.Apps[0].Detail["notReady"]); !strings.Contains(nr, "Deployment hello/hello-worker") {
		t.Fatalf("status.last.apps[0].detail.notReady = %s, want the Deployment", nr)
	}
	h.expectRelease(2, "deployed")

	// v4 without the app: the release is uninstalled.
	h.state("", false)
	v4 := h.publish("stable", h.key, 5)
	h.expectApplied(v4)
	if cm := h.configMap(); cm != nil {
		t.Fatalf("configmap after the app was removed = %v", cm)
	}
	if h.serviceExists() {
		t.Fatal("service still there after the app was removed")
	}
	if recs := h.releaseRecords(); len(recs) != 0 {
		t.Fatalf("release records after uninstall = %v", recs)
	}
}

// TestHelmDrift runs the agent as a daemon: a ConfigMap edited by hand and
// a Service deleted by hand are restored within one interval, by the
// agent's user, and status reports the drift.
func TestHelmDrift(t *testing.T) {
	h := newHelmEnv(t)
	h.state("v1", false)
	v1 := h.publish("stable", h.key, 1)
	p := h.startAgent()
	h.waitApplied(v1)
	testenv.Eventually(t, 60*time.Second, func() bool { return h.configMap()["greeting"] == "v1" && h.serviceExists() },
		"the release was never installed; agent stderr:\n%s", p.Stderr())

	mark := h.kube.Mark()
	ctx := kctx(t)
	cms := h.kube.Clientset.CoreV1().ConfigMaps(helmNS)
	cm, err := cms.Get(ctx, helmConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["greeting"] = "edited by hand"
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := h.kube.Clientset.CoreV1().Services(helmNS).Delete(ctx, helmService, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The interval is 2s: a few intervals at most, on a loaded machine.
	testenv.Eventually(t, 30*time.Second, func() bool { return h.configMap()["greeting"] == "v1" && h.serviceExists() },
		"drift was not restored (configmap %v, service %v); agent stderr:\n%s", h.configMap(), h.serviceExists(), p.Stderr())
	if w := h.kube.Writes(t, mark, testenv.KubeAgentUser); len(w) == 0 {
		t.Fatal("the restore made no write as the agent's user")
	}

	// The live report names the drift and the restore: the applier's own
	// detail, and the view every applier shares.
	type liveApp struct {
		Kind, App string
		View      *struct{ Unit, State string }
		Detail    struct {
			Release, Namespace, Status string
			Revision                   int
		}
		Drift *struct {
			Drifted  []string
			Restores int
		}
	}
	var st struct{ Apps []liveApp }
	out, errOut, code := testenv.Run(t, h.bin, nil, "status", "--config", h.cfgPath, "--output", "json")
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("status: exit %d %q %s", code, out, errOut)
	}
	i := slices.IndexFunc(st.Apps, func(a liveApp) bool {
		return a.Kind == "helm" && a.Detail.Namespace+"/"+a.Detail.Release == helmNS+"/"+helmRelease
	})
	if i < 0 {
		t.Fatalf("status.apps has no release %s/%s: %s", helmNS, helmRelease, out)
	}
	r := st.Apps[i]
	if r.Detail.Release != helmRelease || r.Detail.Status != "deployed" || r.Detail.Revision != 1 || r.Drift == nil || r.Drift.Restores < 1 ||
		r.View == nil || r.View.Unit != "release "+helmNS+"/"+helmRelease || r.View.State != "revision 1 deployed" {
		t.Fatalf("status.apps = %s", out)
	}
	// Drifted is what the last check that found drift saw: both changes,
	// or the one of them that a check in between them missed.
	drifted := strings.Join(r.Drift.Drifted, "\n")
	if !strings.Contains(drifted, helmConfigMap) && !strings.Contains(drifted, helmService) {
		t.Fatalf("status drift = %v, want the ConfigMap or the Service named", r.Drift.Drifted)
	}
}
