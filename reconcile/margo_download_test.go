package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/time/rate"

	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/margo/pack"
	"github.com/berth-dev/berth/source/oci"
)

// TestMargoDownloadOptions: the Margo components download with the
// store's partial folder, the resumes and minFreeSpace of every source,
// and margo.maxBandwidth, else the global maxBandwidth (the one limiter
// the sources without their own share).
func TestMargoDownloadOptions(t *testing.T) {
	e := newMargoEnv(t)
	a := e.agentWith("maxBandwidth: 1MiB\nminFreeSpace: 5%\n", "  maxBandwidth: 64KiB\n")
	d := a.margo.download
	if d.PartialDir != a.store.PartialDir() || d.Resumes != downloadResumes || d.MinFree != (deliver.MinFree{Percent: 5}) {
		t.Errorf("download = %+v, want the store's partial folder, %d resumes, 5%% free", d, downloadResumes)
	}
	if d.Limiter == nil || d.Limiter.Limit() != rate.Limit(64<<10) || d.Limiter == a.limiter {
		t.Errorf("limiter = %v, want margo.maxBandwidth's 64 KiB/s of its own", d.Limiter)
	}
	a = e.agentWith("maxBandwidth: 1MiB\n", "")
	if d := a.margo.download; d.Limiter == nil || d.Limiter != a.limiter || d.Limiter.Limit() != rate.Limit(1<<20) || d.MinFree != (deliver.MinFree{Bytes: 1 << 30, Percent: 10}) {
		t.Errorf("without margo.maxBandwidth: limiter %v (global %v), min free %+v", d.Limiter, a.limiter, d.MinFree)
	}
}

// TestMargoDownloadResumedAcrossReconciles: a component download cut off
// for good is a transport failure (FETCH_FAILED to the WFM, not
// CONTENT_REFUSED), keeps what came in the store's partial folder, and the
// next reconcile resumes it with a Range request; the partial folder is
// empty once it verified.
func TestMargoDownloadResumedAcrossReconciles(t *testing.T) {
	e := newMargoEnv(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte("services:\n  web: {image: x:1}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "big.txt"), []byte(randomText(t, 2<<20)), 0o644)
	ref, _ := oci.ParseReference("oci://" + e.host + "/acme/a:1.0.0")
	p, err := pack.PushComposeArchive(context.Background(), e.client, pack.ComposeOptions{Dir: dir, Ref: ref})
	if err != nil {
		t.Fatal(err)
	}
	e.sign("acme/a", p.Digest)
	path := "/v2/acme/a/blobs/" + e.layerOf("acme/a", p.Digest)
	// The first reconcile: the GET is cut, every resume finds nothing.
	var ranges atomic.Int64
	counting := cutUnresumable(e.srvHandler(), path, &ranges)
	e.intercept.Store(&counting)
	e.wfm.Publish(1, e.deployment(depA, "alpha", "acme/a", "1.0.0"))
	a := e.agent()
	r := e.once(a)
	last := e.wfm.Statuses()[len(e.wfm.Statuses())-1]
	if last.State != "failed" || last.Components[0].Error["code"] != "FETCH_FAILED" || !strings.Contains(r.Error, "truncated") {
		t.Fatalf("cut download: status %+v, error %q", last, r.Error)
	}
	if parts, _ := os.ReadDir(a.store.PartialDir()); len(parts) != 2 {
		t.Fatalf("the partial folder holds %v after a cut download, want the blob and its state", parts)
	}
	before := ranges.Load()
	if r := e.once(a); r.Outcome != "applied" || r.Error != "" {
		t.Fatalf("second reconcile: %+v", r)
	}
	if ranges.Load() <= before {
		t.Error("the second reconcile did not resume with a Range request")
	}
	if parts, _ := os.ReadDir(a.store.PartialDir()); len(parts) != 0 {
		t.Errorf("the partial folder holds %v after the blob verified", parts)
	}
	if last := e.wfm.Statuses()[len(e.wfm.Statuses())-1]; last.State != "installed" {
		t.Errorf("status = %+v", last)
	}
}

// TestMargoMinFreeSpace: a component download that would leave less than
// minFreeSpace is not started: the WFM is told INSUFFICIENT_STORAGE with
// what to do, nothing is applied.
func TestMargoMinFreeSpace(t *testing.T) {
	e := newMargoEnv(t)
	e.archive("acme/a", "1.0.0", "a1", true)
	e.wfm.Publish(1, e.deployment(depA, "alpha", "acme/a", "1.0.0"))
	a := e.agentWith("minFreeSpace: 90%\n", "")
	r := e.once(a)
	last := e.wfm.Statuses()[len(e.wfm.Statuses())-1]
	msg, _ := last.Components[0].Error["message"].(string)
	if last.State != "failed" || last.Components[0].Error["code"] != "INSUFFICIENT_STORAGE" || !strings.Contains(msg, "minFreeSpace") || !strings.Contains(r.Error, "not enough free disk space") {
		t.Fatalf("status %+v, error %q", last, r.Error)
	}
	if len(e.ap.log()) != 0 && len(e.ap.log()[0].apps) != 0 {
		t.Errorf("applied %+v", e.ap.log())
	}
	e.checkViolations()
}

// TestMargoCrashLeftovers: what a crash can leave of the Margo source on
// disk is never used: a revision build folder (revisions/margo.tmp-*) is
// removed when the agent starts, as are temporary downloads in the
// content cache at the next reconcile; a Margo revision whose completion
// record is gone (or whose content no longer matches it) is removed at
// start and built again by the next reconcile, although the WFM answers
// 304, instead of being reported unchanged.
func TestMargoCrashLeftovers(t *testing.T) {
	e := newMargoEnv(t)
	e.archive("acme/a", "1.0.0", "a1", true)
	e.wfm.Publish(1, e.deployment(depA, "alpha", "acme/a", "1.0.0"))
	a := e.agent()
	if r := e.once(a); r.Outcome != "applied" {
		t.Fatal(r)
	}
	cur := current(t, a, MargoSource)
	revs := filepath.Join(a.store.Dir(), "revisions")
	build := filepath.Join(revs, "margo.tmp-123", "rev", "apps", "x")
	os.MkdirAll(build, 0o755)
	os.WriteFile(filepath.Join(build, "compose.yaml"), []byte("half"), 0o644)
	cache := filepath.Join(a.store.Dir(), "margo", "cache")
	os.WriteFile(filepath.Join(cache, ".download-123"), []byte("half a YAML"), 0o600)
	// The revision in force loses a file: it no longer matches its record.
	dir, _ := a.store.RevisionDir(cur)
	if err := os.Remove(filepath.Join(dir, "margo-plan.json")); err != nil {
		t.Fatal(err)
	}

	calls := len(e.ap.log())
	a = e.agent() // the restart
	if _, err := os.Stat(filepath.Join(revs, "margo.tmp-123")); !os.IsNotExist(err) {
		t.Errorf("the build folder of a crashed reconcile is still there: %v", err)
	}
	if a.store.Has(cur) {
		t.Fatal("the damaged revision is still complete")
	}
	r := e.once(a)
	if r.Outcome != "applied" || r.Error != "" {
		t.Fatalf("after the restart: %+v, want the revision built and applied again", r)
	}
	if got := current(t, a, MargoSource); got != cur || !a.store.Has(cur) {
		t.Errorf("current %s (has %v), want %s rebuilt", got, a.store.Has(cur), cur)
	}
	if log := e.ap.log(); len(log) <= calls {
		t.Error("the rebuilt revision was not applied")
	}
	if _, err := os.Stat(filepath.Join(cache, ".download-123")); !os.IsNotExist(err) {
		t.Errorf("a temporary download is still in the cache: %v", err)
	}
}
