package helm

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestReportAfterRestart checks an agent restarted on an already applied
// revision: a new Applier that never ran Apply, whose Watch is given the
// applied revision, restores the drift and reports the live release (its
// Helm revision, status and chart) with the drift it found and restored,
// by reads only.
func TestReportAfterRestart(t *testing.T) {
	k := testenv.StartKube(t)
	const src, ns, rel = "line-7", "restart", "hello"
	key := ns + "/" + rel
	files := withPrefix("charts/hello", helloChart("0.2.0"))
	v1 := revision(t, src, "v1", helmState("path: charts/hello, namespace: "+ns+", timeout: 10s, values: {greeting: v1}"), files)
	ctx := context.Background()

	before := newApplier(t, k, Options{})
	sts := mustApply(t, before, v1, nil)
	applied := detail(t, sts[0])
	if applied.Revision != 1 || applied.Status != "deployed" {
		t.Fatalf("v1 detail = %+v", applied)
	}

	// The agent restarts: a new Applier knows nothing until its Watch runs.
	a := newApplier(t, k, Options{ValuesDir: before.opts.ValuesDir})
	if rep := a.releases(ctx); len(rep) != 0 {
		t.Errorf("report before Watch = %+v, want none", rep)
	}

	// Drift made while the agent was down.
	if err := k.Clientset.CoreV1().Services(ns).Delete(ctx, rel, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	const interval = 2 * time.Second
	stopWatch := startWatch(t, a, interval, v1)
	eventually(t, interval+8*time.Second, func() bool {
		return service(t, k, ns, rel) != nil && a.Drift()[key].Restores > 0
	}, "Service %s recreated by the drift loop of the restarted applier", key)

	check := func(when string, rep ReleaseReport, ok bool) {
		t.Helper()
		if !ok {
			t.Fatalf("%s: no report for %s", when, key)
		}
		if rep.Source != src || rep.App != "hello" || rep.Release != rel || rep.Namespace != ns || rep.Error != "" {
			t.Errorf("%s: report = %+v", when, rep)
		}
		if rep.Revision != 1 || rep.Status != "deployed" || rep.Chart != "hello" || rep.ChartVersion != "0.2.0" || rep.ChartDigest != applied.ChartDigest {
			t.Errorf("%s: report detail = %+v, want revision 1 deployed, chart hello 0.2.0 %s", when, rep.Detail, applied.ChartDigest)
		}
		if rep.LastApply != nil {
			t.Errorf("%s: last apply = %+v, want none: this applier applied nothing", when, rep.LastApply)
		}
		d := rep.Drift
		if d == nil || d.Source != src || d.App != "hello" || d.Restores < 1 || d.LastRestore.IsZero() || d.LastCheck.IsZero() {
			t.Fatalf("%s: report drift = %+v", when, d)
		}
		if got := strings.Join(d.Drifted, "; "); !strings.Contains(got, "Service "+ns+"/"+rel+" was deleted") {
			t.Errorf("%s: drifted = %q, want the deleted Service", when, got)
		}
	}
	rep, ok := a.releases(ctx)[key]
	check("while Watch runs", rep, ok)

	// After the loop stops the report still stands, and reading it writes
	// nothing.
	stopWatch()
	mark := k.Mark()
	rep, ok = a.releases(ctx)[key]
	noWrites(t, k, mark, "a report")
	check("after Watch", rep, ok)
	if n := len(releaseSecrets(t, k, ns, rel)); n != 1 {
		t.Errorf("%d release revisions, want 1: a drift restore makes no Helm revision", n)
	}
}
