package helm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestLifecycle runs one app through the whole life of a release on a real
// API server: install from a chart folder, no write for an unchanged
// revision, upgrade, a failed upgrade rolled back, drift restored, prune.
func TestLifecycle(t *testing.T) {
	k := testenv.StartKube(t)
	a := newApplier(t, k, Options{})
	const src, ns, rel = "line-3", "lifecycle", "hello"
	key := ns + "/" + rel
	files := withPrefix("charts/hello", helloChart("0.1.0"))
	files["values/base.yaml"] = "greeting: from-file\nport: 80\n"
	state := func(extra string) string {
		return helmState("path: charts/hello, namespace: " + ns + ", maxHistory: 3, timeout: 10s, valuesFiles: [values/base.yaml]" + extra)
	}
	ctx := context.Background()

	// v1: installed from the chart folder, in a namespace that does not
	// exist yet, with the values file over the chart's defaults.
	v1 := revision(t, src, "v1", state(""), files)
	sts := mustApply(t, a, v1, nil)
	if len(sts) != 1 || sts[0].Name != "hello" || sts[0].Kind != "helm" || sts[0].Outcome != OutcomeApplied {
		t.Fatalf("v1 statuses = %+v", sts)
	}
	d := detail(t, sts[0])
	if d.Release != rel || d.Namespace != ns || d.Revision != 1 || d.Status != "deployed" || d.Chart != "hello" || d.ChartVersion != "0.1.0" || !strings.HasPrefix(d.ChartDigest, "sha256:") || d.Mirror != "" {
		t.Errorf("v1 detail = %+v", d)
	}
	if got := configMap(t, k, ns, "hello-config")["greeting"]; got != "from-file" {
		t.Errorf("v1 greeting = %q, want from-file", got)
	}
	if svc := service(t, k, ns, rel); svc == nil || svc.Spec.Ports[0].Port != 80 {
		t.Errorf("v1 service = %+v", svc)
	}
	labels := deployedRevision(t, k, ns, rel)
	if labels["version"] != "1" || labels[LabelSource] != src || labels[LabelApp] != "hello" || len(labels[LabelConfigHash]) != 32 {
		t.Errorf("v1 release labels = %v", labels)
	}
	v1Hash := labels[LabelConfigHash]

	// Unchanged: the same revision again, and a new revision whose app is
	// the same, send no write to the API server.
	mark := k.Mark()
	if sts := mustApply(t, a, v1, &v1); sts[0].Outcome != OutcomeApplied || !strings.Contains(sts[0].Message, "unchanged") {
		t.Errorf("v1 again = %+v", sts)
	}
	other := map[string]string{"docs/notes.md": "unrelated\n"}
	for p, c := range files {
		other[p] = c
	}
	v1b := revision(t, src, "v1b", state(""), other)
	if v1b.Digest == v1.Digest {
		t.Fatal("same digest")
	}
	mustApply(t, a, v1b, &v1)
	noWrites(t, k, mark, "applying unchanged revisions")
	if l := deployedRevision(t, k, ns, rel); l["version"] != "1" {
		t.Errorf("after unchanged revisions: deployed revision %s, want 1", l["version"])
	}

	// v2: inline values over the values file, the device-local values
	// file over both.
	if err := os.WriteFile(filepath.Join(a.opts.ValuesDir, "hello.yaml"), []byte("port: 8081\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v2 := revision(t, src, "v2", state(", values: {greeting: v2, port: 9999}"), files)
	sts = mustApply(t, a, v2, &v1b)
	if d := detail(t, sts[0]); d.Revision != 2 || d.Status != "deployed" {
		t.Errorf("v2 detail = %+v", d)
	}
	if got := configMap(t, k, ns, "hello-config")["greeting"]; got != "v2" {
		t.Errorf("v2 greeting = %q, want v2", got)
	}
	if svc := service(t, k, ns, rel); svc == nil || svc.Spec.Ports[0].Port != 8081 {
		t.Errorf("v2 service port = %+v, want the device-local 8081", svc)
	}
	v2Hash := deployedRevision(t, k, ns, rel)[LabelConfigHash]
	if v2Hash == v1Hash {
		t.Error("v2 kept the config hash of v1")
	}

	// v3 adds a Deployment that never becomes ready: it times out and is
	// rolled back to v2.
	v3 := revision(t, src, "v3", state(", values: {greeting: v3, deployment: true}"), files)
	start := time.Now()
	sts, err := apply(t, a, v3, &v2)
	took := time.Since(start)
	if err == nil {
		t.Fatal("v3 applied; want a timeout")
	}
	for _, want := range []string{`app "hello"`, "Deployment " + ns + "/hello", "0 of 1 replicas ready", "within 10s", "rolled back to revision 2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("v3 error does not say %q: %v", want, err)
		}
	}
	if !errors.Is(err, ErrNotReady) {
		t.Errorf("v3 error is not ErrNotReady: %v", err)
	}
	if took < 10*time.Second || took > 2*time.Minute {
		t.Errorf("v3 took %s; want the 10s timeout and a rollback", took)
	}
	if len(sts) != 1 || sts[0].Outcome != OutcomeFailed || sts[0].Message != err.Error() {
		t.Fatalf("v3 statuses = %+v", sts)
	}
	d = detail(t, sts[0])
	if len(d.NotReady) != 1 || !strings.HasPrefix(d.NotReady[0], "Deployment "+ns+"/hello:") || d.Revision != 4 || d.Status != "deployed" {
		t.Errorf("v3 detail = %+v, want the Deployment not ready and revision 4 (the rollback) deployed", d)
	}
	if got := configMap(t, k, ns, "hello-config")["greeting"]; got != "v2" {
		t.Errorf("after the rollback greeting = %q, want v2", got)
	}
	if _, err := k.Clientset.AppsV1().Deployments(ns).Get(ctx, rel, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("after the rollback the Deployment of v3: %v, want it deleted", err)
	}
	l := deployedRevision(t, k, ns, rel)
	if l["version"] != "4" || l[LabelConfigHash] != v2Hash {
		t.Errorf("after the rollback deployed = %v, want revision 4 with the config hash of v2", l)
	}
	if n := len(releaseSecrets(t, k, ns, rel)); n != 3 {
		t.Errorf("%d release revisions kept, want maxHistory 3", n)
	}

	// v2 again after the failure is unchanged: the rollback restored it.
	mark = k.Mark()
	if sts := mustApply(t, a, v2, &v2); !strings.Contains(sts[0].Message, "unchanged") {
		t.Errorf("v2 after the rollback = %+v", sts)
	}
	noWrites(t, k, mark, "applying v2 after the rollback to v2")

	// Drift: a ConfigMap edited and a Service deleted by hand are restored
	// within one interval; checks that find nothing write nothing.
	const interval = 2 * time.Second
	stopWatch := startWatch(t, a, interval, v2)
	mark = k.Mark()
	time.Sleep(2*interval + interval/2)
	noWrites(t, k, mark, "drift checks of a release that did not drift")
	if st := a.Drift()[key]; st.LastCheck.IsZero() || st.Restores != 0 {
		t.Errorf("drift state before any drift = %+v", st)
	}

	cm, err := k.Clientset.CoreV1().ConfigMaps(ns).Get(ctx, "hello-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["greeting"] = "edited by hand"
	cm.Data["extra"] = "added by hand"
	if _, err := k.Clientset.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := k.Clientset.CoreV1().Services(ns).Delete(ctx, rel, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	// One interval, and room for a loaded machine.
	eventually(t, interval+8*time.Second, func() bool {
		return configMap(t, k, ns, "hello-config")["greeting"] == "v2" && service(t, k, ns, rel) != nil
	}, "ConfigMap greeting restored to v2 and Service recreated")
	t.Logf("drift restored in %s", time.Since(changed).Round(time.Millisecond))
	if svc := service(t, k, ns, rel); svc.Annotations[helmReleaseNameAnno] != rel || svc.Labels[helmManagedByLabel] != "Helm" {
		t.Errorf("recreated Service lacks Helm's ownership metadata: %v %v", svc.Labels, svc.Annotations)
	}
	if got := configMap(t, k, ns, "hello-config")["extra"]; got != "added by hand" {
		t.Errorf("a key the chart does not set was changed: %q", got)
	}
	st := a.Drift()[key]
	if st.Restores < 1 || st.LastRestore.IsZero() || st.LastError != "" || st.Source != src || st.App != "hello" {
		t.Errorf("drift state = %+v", st)
	}
	drifted := strings.Join(st.Drifted, "; ")
	if !strings.Contains(drifted, "Service "+ns+"/hello was deleted") && !strings.Contains(drifted, "ConfigMap "+ns+"/hello-config was changed (data.greeting)") {
		t.Errorf("drift found = %q", drifted)
	}
	stopWatch()

	// Report: the live release, the last apply result, the drift.
	rep, ok := a.releases(ctx)[key]
	if !ok {
		t.Fatalf("no report for %s: %+v", key, a.releases(ctx))
	}
	if rep.Source != src || rep.App != "hello" || rep.Revision != 4 || rep.Status != "deployed" || rep.Chart != "hello" || rep.ChartDigest != d.ChartDigest || rep.Error != "" {
		t.Errorf("report = %+v", rep)
	}
	if rep.LastApply == nil || rep.LastApply.Outcome != OutcomeApplied || rep.LastApply.Revision != v2.Digest {
		t.Errorf("report last apply = %+v", rep.LastApply)
	}
	if rep.Drift == nil || rep.Drift.Restores < 1 {
		t.Errorf("report drift = %+v", rep.Drift)
	}

	// v4 no longer lists the app: the release is uninstalled.
	v4 := revision(t, src, "v4", emptyState, nil)
	sts = mustApply(t, a, v4, &v2)
	if len(sts) != 1 || sts[0].Name != "hello" || sts[0].Outcome != OutcomePruned {
		t.Fatalf("v4 statuses = %+v", sts)
	}
	if n := len(releaseSecrets(t, k, ns, rel)); n != 0 {
		t.Errorf("%d release revisions left after the prune", n)
	}
	if configMap(t, k, ns, "hello-config") != nil || service(t, k, ns, rel) != nil {
		t.Error("objects of the pruned release are left")
	}
	if _, ok := a.releases(ctx)[key]; ok {
		t.Error("the pruned release is still reported")
	}
}

// TestWaitAndOwnership checks a first install that fails (uninstalled),
// wait: false (only API acceptance), and a release name another source
// owns (refused, nothing written).
func TestWaitAndOwnership(t *testing.T) {
	k := testenv.StartKube(t)
	a := newApplier(t, k, Options{Namespace: "apps"})
	files := withPrefix("charts/hello", helloChart("0.1.0"))

	t.Run("first install fails", func(t *testing.T) {
		rev := revision(t, "first", "1", helmState("path: charts/hello, timeout: 3s, values: {deployment: true}"), files)
		sts, err := apply(t, a, rev, nil)
		if err == nil || !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "uninstalled") {
			t.Fatalf("err = %v", err)
		}
		if sts[0].Outcome != OutcomeFailed {
			t.Errorf("status = %+v", sts[0])
		}
		if n := len(releaseSecrets(t, k, "apps", "hello")); n != 0 {
			t.Errorf("%d release revisions left", n)
		}
		if configMap(t, k, "apps", "hello-config") != nil {
			t.Error("objects of the failed install are left")
		}
	})

	t.Run("wait false", func(t *testing.T) {
		rev := revision(t, "nowait", "1", helmState("path: charts/hello, wait: false, values: {deployment: true}"), files)
		start := time.Now()
		sts := mustApply(t, a, rev, nil)
		if sts[0].Outcome != OutcomeApplied || time.Since(start) > 30*time.Second {
			t.Errorf("status = %+v after %s", sts[0], time.Since(start))
		}
		if _, err := k.Clientset.AppsV1().Deployments("apps").Get(context.Background(), "hello", metav1.GetOptions{}); err != nil {
			t.Errorf("Deployment: %v", err)
		}
	})

	t.Run("owned by another source", func(t *testing.T) {
		rev := revision(t, "intruder", "1", helmState("path: charts/hello"), files)
		mark := k.Mark()
		sts, err := apply(t, a, rev, nil)
		if !errors.Is(err, ErrNotOwned) || !strings.Contains(err.Error(), `source "nowait", app "hello"`) {
			t.Fatalf("err = %v", err)
		}
		if sts[0].Outcome != OutcomeFailed {
			t.Errorf("status = %+v", sts[0])
		}
		noWrites(t, k, mark, "a refused release")
		if l := deployedRevision(t, k, "apps", "hello"); l[LabelSource] != "nowait" {
			t.Errorf("release labels = %v", l)
		}
	})
}
