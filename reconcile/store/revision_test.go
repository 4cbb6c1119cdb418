package store

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestComplete(t *testing.T) {
	d := dg("c")
	for _, tc := range []struct {
		name    string
		files   int
		size    int64
		wantErr string
	}{
		{"matches", 3, 5, ""},
		{"fewer files on disk", 4, 5, "holds 3 files of 5 bytes, the extraction wrote 4 of 5"},
		{"other size", 3, 6, "holds 3 files of 5 bytes, the extraction wrote 3 of 6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			p, _ := s.RevisionDir(d)
			mustWrite(t, filepath.Join(p, "a"), "abc")
			mustWrite(t, filepath.Join(p, "sub", "b"), "de") // with the symlink: 3 files of 5 bytes
			if err := os.Symlink("a", filepath.Join(p, "sub", "l")); err != nil {
				t.Fatal(err)
			}
			if s.Has(d) {
				t.Fatal("Has before Complete")
			}
			err := s.Complete(d, tc.files, tc.size)
			if tc.wantErr == "" {
				if err != nil || !s.Has(d) {
					t.Fatalf("Complete = %v, Has = %v", err, s.Has(d))
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Complete = %v, want an error with %q", err, tc.wantErr)
			}
			if s.Has(d) || exists(p) {
				t.Fatalf("a revision that does not match its extraction was kept")
			}
		})
	}
}

// TestOpenRemovesIncomplete: a store with completion records keeps only
// the revisions whose record exists and matches their folder.
func TestOpenRemovesIncomplete(t *testing.T) {
	s := openStore(t)
	good, norecord, changed, orphan := dg("good"), dg("norecord"), dg("changed"), dg("orphan")
	addRevision(t, s, good)
	pn, _ := s.RevisionDir(norecord)
	mustWrite(t, filepath.Join(pn, "f"), "x") // extracted, never completed
	pc := addRevision(t, s, changed)
	if err := os.Remove(filepath.Join(pc, "digest.txt")); err != nil { // a file lost
		t.Fatal(err)
	}
	po, _ := s.RevisionDir(orphan)
	mustWrite(t, po+completeSuffix, `{"digest":"`+orphan+`","files":0,"size":0}`)
	trash := filepath.Join(s.Dir(), "trash", dirName(dg("old"))+"-123")
	mustWrite(t, filepath.Join(trash, "half", "f"), "x")
	if err := s.Switch("app", changed); err != nil {
		t.Fatal(err)
	}

	s2, err := Open(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if !s2.Has(good) {
		t.Error("the complete revision was removed")
	}
	for _, p := range []string{pn, pc, pc + completeSuffix, po + completeSuffix, trash} {
		if exists(p) {
			t.Errorf("%s survived Open", p)
		}
	}
	if s2.Has(changed) || s2.Has(norecord) {
		t.Error("an incomplete revision is reported present")
	}
	if len(s2.Removed) != 2 {
		t.Errorf("Removed = %v, want the two incomplete revisions", s2.Removed)
	}
	if got := revisionNames(t, s2); len(got) != 2 { // good and its record
		t.Errorf("revisions/ holds %v", got)
	}
}

// TestOpenAdoptsLegacyStore: the revisions of a store written before
// completion records are kept and get a record.
func TestOpenAdoptsLegacyStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	d := dg("legacy")
	rev := filepath.Join(dir, "revisions", dirName(d))
	mustWrite(t, filepath.Join(rev, "berth.yaml"), "apps: []\n")
	mustWrite(t, filepath.Join(dir, "revisions", dirName(d)+".tmp-1", "f"), "partial")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Has(d) || !exists(filepath.Join(rev, "berth.yaml")) {
		t.Fatal("the legacy revision was not adopted")
	}
	if exists(filepath.Join(dir, "revisions", dirName(d)+".tmp-1")) {
		t.Error("the partial extraction survived")
	}
	// From now on a folder without a record is incomplete.
	other := filepath.Join(dir, "revisions", dirName(dg("later")))
	mustWrite(t, filepath.Join(other, "f"), "x")
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	if exists(other) {
		t.Error("a folder without a record was adopted after the migration")
	}
}

func TestDiscard(t *testing.T) {
	s := openStore(t)
	complete, partial := dg("complete"), dg("partial")
	addRevision(t, s, complete)
	pp, _ := s.RevisionDir(partial)
	mustWrite(t, filepath.Join(pp, "f"), "x")
	for _, d := range []string{complete, partial, dg("absent")} {
		if err := s.Discard(d); err != nil {
			t.Fatalf("Discard(%s): %v", d, err)
		}
	}
	if !s.Has(complete) {
		t.Error("Discard removed a complete revision")
	}
	if exists(pp) {
		t.Error("Discard left the incomplete folder")
	}
	if entries, _ := os.ReadDir(filepath.Join(s.Dir(), "trash")); len(entries) != 0 {
		t.Errorf("trash holds %d entries", len(entries))
	}
}

// TestGCRemovesRecordsAndTrash: a collected revision leaves nothing behind.
func TestGCRemovesRecordsAndTrash(t *testing.T) {
	s := openStore(t)
	keep, old := dg("keep"), dg("old")
	addRevision(t, s, keep)
	po := addRevision(t, s, old)
	if err := s.Switch("app", keep); err != nil {
		t.Fatal(err)
	}
	st := &State{}
	st.Source("app")
	if _, err := s.GC(st, 1); err != nil {
		t.Fatal(err)
	}
	if exists(po) || exists(po+completeSuffix) || s.Has(old) {
		t.Error("the collected revision left its folder or record")
	}
	if entries, _ := os.ReadDir(filepath.Join(s.Dir(), "trash")); len(entries) != 0 {
		t.Errorf("trash holds %d entries", len(entries))
	}
	if !s.Has(keep) {
		t.Error("current was collected")
	}
}

// TestSeal: a revision built in place (a Margo revision) is usable only
// once sealed, and its record holds what the folder holds, so that a later
// Open keeps it.
func TestSeal(t *testing.T) {
	d := dg("s")
	s := openStore(t)
	p, _ := s.RevisionDir(d)
	mustWrite(t, filepath.Join(p, "a"), "abc")
	mustWrite(t, filepath.Join(p, "sub", "b"), "de")
	if s.Has(d) {
		t.Fatal("Has before Seal")
	}
	if err := s.Seal(d); err != nil {
		t.Fatal(err)
	}
	if !s.Has(d) {
		t.Fatal("not Has after Seal")
	}
	s2, err := Open(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if !s2.Has(d) {
		t.Fatal("Open removed a sealed revision")
	}
}
