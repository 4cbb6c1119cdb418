package reconcile

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMissingRevisionIsFetchedAgain: a revision that vanished from the
// store (removed as incomplete at start-up) is not "unchanged" although
// state.json and current name it: it is pulled and applied again.
func TestMissingRevisionIsFetchedAgain(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("", src{name: "app", repo: "fleet/app"})
	rec := newRecorder()
	a := newAgent(t, cfg, rec)
	d := e.push("fleet/app", "stable", artifact{files: withState(nil)})
	one(t, poll(a, "app"), "applied", d)
	dir, _ := a.store.RevisionDir(d)
	if err := os.Remove(dir + ".complete"); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	one(t, poll(a, "app"), "applied", d)
	if _, err := os.Stat(filepath.Join(a.store.CurrentDir("app"), "berth.yaml")); err != nil {
		t.Fatalf("current revision not restored: %v", err)
	}
	if !a.store.Has(d) {
		t.Fatal("the revision has no completion record")
	}
}
