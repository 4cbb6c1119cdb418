package helm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/state"
)

// helloChart is a chart "hello" of a ConfigMap, <release>-config, whose
// data.greeting is .Values.greeting, and a Service <release>; with
// .Values.deployment also a Deployment <release> that never becomes ready
// (there is no kubelet).
func helloChart(version string) map[string]string {
	return map[string]string{
		"Chart.yaml":  "apiVersion: v2\nname: hello\nversion: " + version + "\n",
		"values.yaml": "greeting: chart-default\ndeployment: false\nport: 80\n",
		".helmignore": "*.md\n",
		"README.md":   "not part of the chart\n",
		"templates/configmap.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
  labels: {app: hello}
data:
  greeting: {{ .Values.greeting | quote }}
`,
		"templates/service.yaml": `apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}
spec:
  selector: {app: hello}
  ports:
    - name: http
      port: {{ .Values.port }}
      targetPort: 8080
`,
		"templates/deployment.yaml": `{{- if .Values.deployment }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: 1
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      labels: {app: hello}
    spec:
      containers:
        - name: hello
          image: registry.invalid/hello:1
          resources:
            requests: {cpu: 100m, memory: 16Mi}
{{- end }}
`,
	}
}

// withPrefix returns files with every path under prefix.
func withPrefix(prefix string, files map[string]string) map[string]string {
	out := map[string]string{}
	for p, c := range files {
		out[prefix+"/"+p] = c
	}
	return out
}

// revision writes an extracted revision of source src: berth.yaml and the
// given files. Its digest follows seed.
func revision(t *testing.T, src, seed, berthYAML string, files map[string]string, extensions ...string) state.Revision {
	t.Helper()
	dir := t.TempDir()
	all := map[string]string{state.FileName: berthYAML}
	for p, c := range files {
		all[p] = c
	}
	for p, content := range all {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st, err := state.Load(os.DirFS(dir))
	if err != nil {
		t.Fatalf("berth.yaml: %v", err)
	}
	sum := sha256.Sum256([]byte(src + "/" + seed))
	return state.Revision{Source: src, Digest: "sha256:" + hex.EncodeToString(sum[:]), Dir: dir, State: st, Extensions: extensions}
}

// helmState is a berth.yaml with one Helm app hello whose helm: block is
// the given flow mapping body.
func helmState(helm string) string {
	return "apiVersion: berth.dev/v1\nkind: DeviceState\napps:\n  - name: hello\n    helm: {" + helm + "}\n"
}

// emptyState is a berth.yaml without apps.
const emptyState = "apiVersion: berth.dev/v1\nkind: DeviceState\napps: []\n"

// testWriter sends logs to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newApplier is an Applier on the test cluster as the agent's user, with
// its own values folder.
func newApplier(t *testing.T, k *testenv.Kube, o Options) *Applier {
	t.Helper()
	o.Kubeconfig = k.Kubeconfig
	if o.ValuesDir == "" {
		o.ValuesDir = t.TempDir()
	}
	o.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// apply runs Apply with a bounded context.
func apply(t *testing.T, a *Applier, rev state.Revision, prev *state.Revision) ([]state.AppStatus, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	return a.Apply(ctx, rev, prev)
}

// mustApply runs Apply and fails the test unless every app applied.
func mustApply(t *testing.T, a *Applier, rev state.Revision, prev *state.Revision) []state.AppStatus {
	t.Helper()
	sts, err := apply(t, a, rev, prev)
	if err != nil {
		t.Fatalf("Apply %s: %v", rev.Digest[:15], err)
	}
	return sts
}

// configMap returns the data of a ConfigMap, nil when it does not exist.
func configMap(t *testing.T, k *testenv.Kube, ns, name string) map[string]string {
	t.Helper()
	cm, err := k.Clientset.CoreV1().ConfigMaps(ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("get configmap %s/%s: %v", ns, name, err)
	}
	if cm.Data == nil {
		return map[string]string{}
	}
	return cm.Data
}

// service returns a Service, nil when it does not exist.
func service(t *testing.T, k *testenv.Kube, ns, name string) *corev1.Service {
	t.Helper()
	svc, err := k.Clientset.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("get service %s/%s: %v", ns, name, err)
	}
	return svc
}

// releaseSecrets returns the Helm release records of a release, by
// revision: their labels.
func releaseSecrets(t *testing.T, k *testenv.Kube, ns, name string) map[string]map[string]string {
	t.Helper()
	list, err := k.Clientset.CoreV1().Secrets(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "owner=helm,name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for _, s := range list.Items {
		out[s.Labels["version"]] = s.Labels
	}
	return out
}

// deployedRevision returns the labels of the deployed revision of a
// release, failing the test unless there is exactly one.
func deployedRevision(t *testing.T, k *testenv.Kube, ns, name string) map[string]string {
	t.Helper()
	var found []map[string]string
	for _, l := range releaseSecrets(t, k, ns, name) {
		if l["status"] == "deployed" {
			found = append(found, l)
		}
	}
	if len(found) != 1 {
		t.Fatalf("release %s/%s: %d deployed revisions, want 1: %v", ns, name, len(found), releaseSecrets(t, k, ns, name))
	}
	return found[0]
}

// detail decodes the Detail of an app status.
func detail(t *testing.T, st state.AppStatus) Detail {
	t.Helper()
	var d Detail
	if err := json.Unmarshal(st.Detail, &d); err != nil {
		t.Fatalf("detail of %s: %v (%s)", st.Name, err, st.Detail)
	}
	return d
}

// noWrites fails the test when the agent's user sent write requests since
// mark, naming them.
func noWrites(t *testing.T, k *testenv.Kube, mark testenv.AuditMark, what string) {
	t.Helper()
	if w := k.Writes(t, mark, testenv.KubeAgentUser); len(w) > 0 {
		var lines []string
		for _, e := range w {
			lines = append(lines, e.String())
		}
		t.Errorf("%s: %d write requests to the API server, want none:\n  %s", what, len(w), strings.Join(lines, "\n  "))
	}
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", timeout, fmt.Sprintf(format, args...))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startWatch runs a.Watch on revs in the background until the returned
// stop is called (it waits for Watch to return; calling it again does
// nothing) or the test ends.
func startWatch(t *testing.T, a *Applier, interval time.Duration, revs ...state.Revision) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := a.Watch(ctx, func() []state.Revision { return revs }, interval); !errors.Is(err, context.Canceled) {
			t.Errorf("Watch = %v", err)
		}
	})
	stop = func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	return stop
}
