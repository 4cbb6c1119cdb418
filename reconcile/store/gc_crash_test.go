package store

import (
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// gcHelperEnv names the state folder the GC helper process collects.
const gcHelperEnv = "BERTH_STORE_GC_HELPER_DIR"

// bigRevisionFiles is the size of the revision the GC crash test removes:
// enough files that removing them takes a while to kill into.
const bigRevisionFiles = 1500

// addBigRevision creates the complete revision of d with n files in
// folders of 100.
func addBigRevision(t *testing.T, s *Store, d string, n int) {
	t.Helper()
	dir := addRevision(t, s, d)
	size := int64(len(d))
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("d%03d", i/100), fmt.Sprintf("f%04d", i))
		if i%100 == 0 {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
		size += int64(len(p))
	}
	if err := s.Complete(d, n+1, size); err != nil {
		t.Fatal(err)
	}
}

// countFiles counts the regular files below dir.
func countFiles(dir string) int {
	n := 0
	_ = filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

// gcState is the state the helper collects with: source app applied small
// (current) and nothing else, so that big is old.
func gcState(small string) *State {
	st := &State{}
	st.Source("app").History = []Revision{{Digest: small, Outcome: OutcomeApplied}}
	return st
}

// TestHelperGC is not a test: run by TestGCCrash in a child process, it
// opens the store and collects its old revisions, to be killed meanwhile.
func TestHelperGC(t *testing.T) {
	dir := os.Getenv(gcHelperEnv)
	if dir == "" {
		t.Skip("helper process for TestGCCrash")
	}
	s, err := Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(3)
	}
	fmt.Println("collecting") // the parent may kill from now on
	if _, err := s.GC(gcState(dg("small")), 1); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

// TestGCCrash kills a process while its garbage collection removes a large
// old revision (issue 11: the half-removed revision was later switched in
// and reported applied). After every kill and a new Open, the revision is
// either absent or complete: never present with files missing.
func TestGCCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("kills processes in a loop")
	}
	small, big := dg("small"), dg("big")

	// How long does collecting the big revision take here?
	s := openStore(t)
	addRevision(t, s, small)
	if err := s.Switch("app", small); err != nil {
		t.Fatal(err)
	}
	addBigRevision(t, s, big, bigRevisionFiles)
	start := time.Now()
	if _, err := s.GC(gcState(small), 1); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("collecting %d files takes %v", bigRevisionFiles, took)

	interrupted := 0
	const rounds = 8
	for round := range rounds {
		addBigRevision(t, s, big, bigRevisionFiles)
		cmd, stderr := startHelper(t, "TestHelperGC", "collecting", gcHelperEnv+"="+s.Dir())
		// Kill somewhere in the first 80% of the removal.
		time.Sleep(time.Duration(rand.Int64N(int64(took)*8/10 + 1)))
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		killed := ws.Signaled() && ws.Signal() == syscall.SIGKILL
		if !killed && cmd.ProcessState.ExitCode() != 0 {
			t.Fatalf("round %d: helper failed: %s", round, stderr.String())
		}

		// What a kill leaves of big, in its folder or anywhere else.
		p, _ := s.RevisionDir(big)
		bigLeft := func() int { return countFiles(p) + countFiles(filepath.Join(s.Dir(), "trash")) }
		left := bigLeft()
		if killed && left > 0 && left < bigRevisionFiles+1 {
			interrupted++
		}
		// The agent restarts.
		s2, err := Open(s.Dir())
		if err != nil {
			t.Fatalf("round %d: Open after the kill: %v", round, err)
		}
		if s2.Has(big) {
			if n := countFiles(p); n != bigRevisionFiles+1 {
				t.Fatalf("round %d: after a kill during GC the store has revision big with %d of %d files", round, n, bigRevisionFiles+1)
			}
		}
		if !s2.Has(small) {
			t.Fatalf("round %d: the current revision is gone", round)
		}
		// Nothing of big survives but a complete revision.
		if rest := bigLeft(); rest != 0 && (!s2.Has(big) || rest != bigRevisionFiles+1) {
			t.Fatalf("round %d: %d files of the collected revision remain after Open", round, rest)
		}
		// Finish the collection for the next round.
		if _, err := s2.GC(gcState(small), 1); err != nil {
			t.Fatal(err)
		}
		if countFiles(p) != 0 || s2.Has(big) {
			t.Fatalf("round %d: GC did not remove big", round)
		}
	}
	t.Logf("%d of %d kills interrupted a removal in progress", interrupted, rounds)
	if interrupted == 0 {
		t.Error("no kill landed during a removal: the test proved nothing")
	}
}
