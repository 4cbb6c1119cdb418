package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// dg returns a valid sha256 digest derived from s.
func dg(s string) string {
	h := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(h[:])
}

// dirName is the folder name of the revision of digest d.
func dirName(d string) string { return strings.Replace(d, ":", "-", 1) }

// openStore opens a store in a fresh folder.
func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// addRevision creates the complete revision of d, with one file in it.
func addRevision(t *testing.T, s *Store, d string) string {
	t.Helper()
	dir, err := s.RevisionDir(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "digest.txt"), []byte(d), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Complete(d, 1, int64(len(d))); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// revisionNames lists the entries of stateDir/revisions.
func revisionNames(t *testing.T, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.Dir(), "revisions"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.Name() != formatMarker {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestOpenCreatesLayout(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, dir string)
	}{
		{"missing folder", func(*testing.T, string) {}},
		{"missing parents", func(*testing.T, string) {}},
		{"existing empty folder", func(t *testing.T, dir string) {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
		}},
		{"existing layout", func(t *testing.T, dir string) {
			for _, d := range []string{"revisions", "sources"} {
				if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
					t.Fatal(err)
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			if tc.name == "missing parents" {
				dir = filepath.Join(t.TempDir(), "a", "b", "state")
			}
			tc.prepare(t, dir)
			s, err := Open(dir)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if s.Dir() != dir {
				t.Errorf("Dir() = %q, want %q", s.Dir(), dir)
			}
			for _, d := range []string{dir, filepath.Join(dir, "revisions"), filepath.Join(dir, "sources")} {
				st, err := os.Stat(d)
				if err != nil || !st.IsDir() {
					t.Errorf("%s: not a folder after Open (%v)", d, err)
				}
			}
			// Opening twice is harmless.
			if _, err := Open(dir); err != nil {
				t.Errorf("second Open: %v", err)
			}
		})
	}
}

func TestOpenFails(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	mustWrite(t, file, "x")
	revFile := filepath.Join(base, "revfile")
	mustWrite(t, filepath.Join(revFile, "revisions"), "not a folder")
	for _, tc := range []struct{ name, dir string }{
		{"state folder is a file", file},
		{"below a file", filepath.Join(file, "state")},
		{"revisions is a file", revFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Open(tc.dir); err == nil {
				t.Fatalf("Open(%s) succeeded, want an error", tc.dir)
			}
		})
	}
}

func TestOpenRemovesLeftovers(t *testing.T) {
	d1, d2 := dg("one"), dg("two")
	type entry struct {
		path string // relative to the state folder
		dir  bool
		keep bool // must survive Open
	}
	for _, tc := range []struct {
		name    string
		entries []entry
	}{
		{"partial extraction", []entry{
			{path: "revisions/" + dirName(d1) + ".tmp-123456", dir: true},
			{path: "revisions/" + dirName(d1), dir: true, keep: true},
		}},
		{"several partial extractions of one digest", []entry{
			{path: "revisions/" + dirName(d2) + ".tmp-1", dir: true},
			{path: "revisions/" + dirName(d2) + ".tmp-2", dir: true},
			{path: "revisions/" + dirName(d2) + ".tmp-3"},
		}},
		{"complete revisions are never touched", []entry{
			{path: "revisions/" + dirName(d1), dir: true, keep: true},
			{path: "revisions/" + dirName(d2), dir: true, keep: true},
		}},
		{"state temporary files", []entry{
			{path: ".state.json.tmp-1"},
			{path: ".state.json.tmp-987654321"},
			{path: "state.json", keep: true},
			{path: "state.json.bak", keep: true},
		}},
		{"current temporary links", []entry{
			{path: "sources/a/.current.tmp-" + dirName(d1)},
			{path: "sources/b/.current.tmp-" + dirName(d2)},
			{path: "sources/a/current", keep: true},
		}},
		{"unrelated files stay", []entry{
			{path: "berth.sock.lock", keep: true},
			{path: "sources/a/notes", keep: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			for _, e := range tc.entries {
				p := filepath.Join(dir, e.path)
				if e.dir {
					mustWrite(t, filepath.Join(p, "sub", "file"), "content")
				} else {
					mustWrite(t, p, "content")
				}
			}
			if _, err := Open(dir); err != nil {
				t.Fatalf("Open: %v", err)
			}
			for _, e := range tc.entries {
				p := filepath.Join(dir, e.path)
				if got := exists(p); got != e.keep {
					t.Errorf("%s exists = %v after Open, want %v", e.path, got, e.keep)
				}
				if e.keep && e.dir && !exists(filepath.Join(p, "sub", "file")) {
					t.Errorf("the content of %s was touched", e.path)
				}
			}
		})
	}
}

func TestOpenRemovesDanglingCurrentTempLink(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := dg("x")
	addRevision(t, s, d)
	if err := s.Switch("app", d); err != nil {
		t.Fatal(err)
	}
	// A crash between the symlink and the rename of Switch.
	tmp := filepath.Join(dir, "sources", "app", ".current.tmp-"+dirName(dg("y")))
	if err := os.Symlink("../../revisions/"+dirName(dg("y")), tmp); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	if exists(tmp) {
		t.Errorf("%s survived Open", tmp)
	}
	if got, err := s.Current("app"); err != nil || got != d {
		t.Errorf("Current = %q, %v; want %q", got, err, d)
	}
}

func TestRevisionDir(t *testing.T) {
	s := openStore(t)
	good := dg("good")
	for _, tc := range []struct {
		name   string
		digest string
		want   string // relative to revisions/; "" means an error
	}{
		{"sha256", good, dirName(good)},
		{"empty", "", ""},
		{"no algorithm", strings.TrimPrefix(good, "sha256:"), ""},
		{"no hex", "sha256:", ""},
		{"short hex", good[:len(good)-1], ""},
		{"long hex", good + "0", ""},
		{"upper case hex", "sha256:" + strings.ToUpper(strings.TrimPrefix(good, "sha256:")), ""},
		{"not hex", "sha256:" + strings.Repeat("z", 64), ""},
		{"unknown algorithm", "md5:d41d8cd98f00b204e9800998ecf8427e", ""},
		{"path traversal", "sha256:../../../etc/passwd", ""},
		{"slash", "sha256:" + strings.Repeat("a", 31) + "/" + strings.Repeat("a", 32), ""},
		{"tag", "latest", ""},
		{"dash form", dirName(good), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.RevisionDir(tc.digest)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("RevisionDir(%q) = %q, want an error", tc.digest, got)
				}
				if !strings.Contains(err.Error(), "revision digest") {
					t.Errorf("error %q does not say what was wrong", err)
				}
				if s.Has(tc.digest) {
					t.Errorf("Has(%q) = true", tc.digest)
				}
				return
			}
			if err != nil {
				t.Fatalf("RevisionDir(%q): %v", tc.digest, err)
			}
			if want := filepath.Join(s.Dir(), "revisions", tc.want); got != want {
				t.Errorf("RevisionDir(%q) = %q, want %q", tc.digest, got, want)
			}
		})
	}
}

func TestHas(t *testing.T) {
	d := dg("has")
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, s *Store)
		digest  string
		want    bool
	}{
		{"absent", func(*testing.T, *Store) {}, d, false},
		{"complete", func(t *testing.T, s *Store) { addRevision(t, s, d) }, d, true},
		{"folder without completion record", func(t *testing.T, s *Store) {
			p, _ := s.RevisionDir(d)
			mustWrite(t, filepath.Join(p, "f"), "x")
		}, d, false},
		{"completion record without folder", func(t *testing.T, s *Store) {
			p, _ := s.RevisionDir(d)
			mustWrite(t, p+".complete", `{"digest":"`+d+`","files":1,"size":1}`)
		}, d, false},
		{"completion record of another digest", func(t *testing.T, s *Store) {
			p, _ := s.RevisionDir(d)
			mustWrite(t, filepath.Join(p, "f"), "x")
			mustWrite(t, p+".complete", `{"digest":"`+dg("other")+`","files":1,"size":1}`)
		}, d, false},
		{"corrupt completion record", func(t *testing.T, s *Store) {
			p, _ := s.RevisionDir(d)
			mustWrite(t, filepath.Join(p, "f"), "x")
			mustWrite(t, p+".complete", `{"digest":`)
		}, d, false},
		{"partial only", func(t *testing.T, s *Store) {
			p, _ := s.RevisionDir(d)
			mustWrite(t, filepath.Join(p+".tmp-1", "f"), "x")
		}, d, false},
		{"a file, not a folder", func(t *testing.T, s *Store) {
			p, _ := s.RevisionDir(d)
			mustWrite(t, p, "x")
		}, d, false},
		{"another digest", func(t *testing.T, s *Store) { addRevision(t, s, dg("other")) }, d, false},
		{"bad digest", func(*testing.T, *Store) {}, "sha256:nope", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			tc.prepare(t, s)
			if got := s.Has(tc.digest); got != tc.want {
				t.Errorf("Has(%q) = %v, want %v", tc.digest, got, tc.want)
			}
		})
	}
}

func TestSwitch(t *testing.T) {
	d1, d2, missing := dg("one"), dg("two"), dg("missing")
	for _, tc := range []struct {
		name    string
		present []string
		steps   []string // digests to switch to, in order
		fail    []bool   // whether each step must fail
		want    string   // current afterwards
	}{
		{"first switch", []string{d1}, []string{d1}, []bool{false}, d1},
		{"switch twice", []string{d1, d2}, []string{d1, d2}, []bool{false, false}, d2},
		{"switch back", []string{d1, d2}, []string{d1, d2, d1}, []bool{false, false, false}, d1},
		{"same digest again", []string{d1}, []string{d1, d1}, []bool{false, false}, d1},
		{"missing revision first", []string{d1}, []string{missing}, []bool{true}, ""},
		{"missing revision leaves current", []string{d1, d2}, []string{d1, missing}, []bool{false, true}, d1},
		{"bad digest leaves current", []string{d1}, []string{d1, "sha256:bad"}, []bool{false, true}, d1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			for _, d := range tc.present {
				addRevision(t, s, d)
			}
			for i, d := range tc.steps {
				err := s.Switch("app", d)
				if tc.fail[i] != (err != nil) {
					t.Fatalf("step %d: Switch(%s) = %v, want failure %v", i, d, err, tc.fail[i])
				}
				if err != nil && !strings.Contains(err.Error(), "app") {
					t.Errorf("error %q does not name the source", err)
				}
			}
			got, err := s.Current("app")
			if err != nil || got != tc.want {
				t.Fatalf("Current = %q, %v; want %q", got, err, tc.want)
			}
			link := s.CurrentDir("app")
			if tc.want == "" {
				if exists(link) {
					t.Errorf("%s exists after failed switches only", link)
				}
				return
			}
			// current is a relative symlink into revisions/.
			fi, err := os.Lstat(link)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode()&os.ModeSymlink == 0 {
				t.Fatalf("%s is %v, want a symlink", link, fi.Mode())
			}
			target, _ := os.Readlink(link)
			if want := filepath.Join("..", "..", "revisions", dirName(tc.want)); target != want {
				t.Errorf("current -> %q, want %q", target, want)
			}
			// Reading through it gives the revision's files.
			b, err := os.ReadFile(filepath.Join(link, "digest.txt"))
			if err != nil || string(b) != tc.want {
				t.Errorf("current/digest.txt = %q, %v; want %q", b, err, tc.want)
			}
			// No temporary link is left behind.
			entries, _ := os.ReadDir(filepath.Dir(link))
			for _, e := range entries {
				if e.Name() != "current" {
					t.Errorf("left over in %s: %s", filepath.Dir(link), e.Name())
				}
			}
		})
	}
}

func TestSwitchSourcesAreIndependent(t *testing.T) {
	s := openStore(t)
	d1, d2 := dg("one"), dg("two")
	addRevision(t, s, d1)
	addRevision(t, s, d2)
	if err := s.Switch("a", d1); err != nil {
		t.Fatal(err)
	}
	if err := s.Switch("b", d2); err != nil {
		t.Fatal(err)
	}
	for src, want := range map[string]string{"a": d1, "b": d2, "c": ""} {
		if got, err := s.Current(src); err != nil || got != want {
			t.Errorf("Current(%s) = %q, %v; want %q", src, got, err, want)
		}
	}
}

// TestSwitchIsAtomic switches back and forth while readers check that
// current always names one of the two revisions and never goes missing.
func TestSwitchIsAtomic(t *testing.T) {
	s := openStore(t)
	d1, d2 := dg("one"), dg("two")
	addRevision(t, s, d1)
	addRevision(t, s, d2)
	if err := s.Switch("app", d1); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var reads atomic.Int64
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				got, err := s.Current("app")
				if err != nil || (got != d1 && got != d2) {
					errs <- errors.Join(err, errors.New("current = "+got))
					return
				}
				if _, err := os.Stat(filepath.Join(s.CurrentDir("app"), "digest.txt")); err != nil {
					errs <- err
					return
				}
				reads.Add(1)
			}
		})
	}
	for i := range 300 {
		if err := s.Switch("app", []string{d1, d2}[i%2]); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a reader saw a half switch: %v", err)
	}
	if reads.Load() == 0 {
		t.Error("the readers never ran")
	}
}

func TestCurrent(t *testing.T) {
	d := dg("cur")
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, s *Store)
		want    string
		wantErr bool
	}{
		{"no source folder", func(*testing.T, *Store) {}, "", false},
		{"source folder without current", func(t *testing.T, s *Store) {
			if err := os.MkdirAll(filepath.Join(s.Dir(), "sources", "app"), 0o700); err != nil {
				t.Fatal(err)
			}
		}, "", false},
		{"switched", func(t *testing.T, s *Store) {
			addRevision(t, s, d)
			if err := s.Switch("app", d); err != nil {
				t.Fatal(err)
			}
		}, d, false},
		{"dangling link still parses", func(t *testing.T, s *Store) {
			link := s.CurrentDir("app")
			if err := os.MkdirAll(filepath.Dir(link), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("../../revisions/"+dirName(d), link); err != nil {
				t.Fatal(err)
			}
		}, d, false},
		{"link to a non-revision", func(t *testing.T, s *Store) {
			link := s.CurrentDir("app")
			if err := os.MkdirAll(filepath.Dir(link), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("../../revisions/garbage", link); err != nil {
				t.Fatal(err)
			}
		}, "", true},
		{"regular file", func(t *testing.T, s *Store) {
			mustWrite(t, s.CurrentDir("app"), d)
		}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			tc.prepare(t, s)
			got, err := s.Current("app")
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Current = %q, want an error", got)
				}
				if !strings.Contains(err.Error(), "app") {
					t.Errorf("error %q does not name the source", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Current = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestCurrentDir(t *testing.T) {
	s := openStore(t)
	if got, want := s.CurrentDir("line-3"), filepath.Join(s.Dir(), "sources", "line-3", "current"); got != want {
		t.Errorf("CurrentDir = %q, want %q", got, want)
	}
}

func TestGC(t *testing.T) {
	r := make([]string, 8)
	for i := range r {
		r[i] = dg(string(rune('a' + i)))
	}
	rev := func(d string, o Outcome) Revision { return Revision{Digest: d, Outcome: o} }
	type src struct {
		current string
		history []Revision
	}
	for _, tc := range []struct {
		name    string
		present []string
		tmp     []string // digests with a partial .tmp folder
		sources map[string]src
		keep    int
		want    []string // revisions left
	}{
		{
			name:    "keeps the newest applied",
			present: r[:5],
			sources: map[string]src{"a": {current: r[4], history: []Revision{
				rev(r[4], OutcomeApplied), rev(r[3], OutcomeApplied), rev(r[2], OutcomeApplied), rev(r[1], OutcomeApplied), rev(r[0], OutcomeApplied),
			}}},
			keep: 2,
			want: []string{r[3], r[4]},
		},
		{
			name:    "failed and refused do not count",
			present: r[:5],
			sources: map[string]src{"a": {current: r[4], history: []Revision{
				rev(r[4], OutcomeApplied), rev(r[3], OutcomeFailed), rev(r[2], OutcomeRefused), rev(r[1], OutcomeApplied), rev(r[0], OutcomeApplied),
			}}},
			keep: 2,
			want: []string{r[1], r[4]},
		},
		{
			name:    "rolled back counts",
			present: r[:4],
			sources: map[string]src{"a": {current: r[0], history: []Revision{
				rev(r[0], OutcomeRolledBack), rev(r[3], OutcomeApplied), rev(r[2], OutcomeApplied), rev(r[0], OutcomeApplied),
			}}},
			keep: 2,
			want: []string{r[0], r[3]},
		},
		{
			name:    "repeated digests count once",
			present: r[:4],
			sources: map[string]src{"a": {current: r[3], history: []Revision{
				rev(r[3], OutcomeApplied), rev(r[2], OutcomeApplied), rev(r[3], OutcomeApplied), rev(r[1], OutcomeApplied), rev(r[0], OutcomeApplied),
			}}},
			keep: 3,
			want: []string{r[1], r[2], r[3]},
		},
		{
			name:    "current is kept beyond keep",
			present: r[:4],
			sources: map[string]src{"a": {current: r[0], history: []Revision{
				rev(r[3], OutcomeApplied), rev(r[2], OutcomeApplied), rev(r[1], OutcomeApplied), rev(r[0], OutcomeApplied),
			}}},
			keep: 1,
			want: []string{r[0], r[3]},
		},
		{
			name:    "current without history",
			present: r[:3],
			sources: map[string]src{"a": {current: r[1]}},
			keep:    5,
			want:    []string{r[1]},
		},
		{
			name:    "keep more than there is",
			present: r[:3],
			sources: map[string]src{"a": {current: r[2], history: []Revision{
				rev(r[2], OutcomeApplied), rev(r[1], OutcomeApplied), rev(r[0], OutcomeApplied),
			}}},
			keep: 10,
			want: r[:3],
		},
		{
			name:    "per source",
			present: r[:6],
			sources: map[string]src{
				"a": {current: r[2], history: []Revision{rev(r[2], OutcomeApplied), rev(r[1], OutcomeApplied), rev(r[0], OutcomeApplied)}},
				"b": {current: r[5], history: []Revision{rev(r[5], OutcomeApplied), rev(r[4], OutcomeApplied), rev(r[3], OutcomeApplied)}},
			},
			keep: 2,
			want: []string{r[1], r[2], r[4], r[5]},
		},
		{
			name:    "shared revision",
			present: r[:3],
			sources: map[string]src{
				"a": {current: r[0], history: []Revision{rev(r[0], OutcomeApplied)}},
				"b": {current: r[0], history: []Revision{rev(r[0], OutcomeApplied), rev(r[1], OutcomeApplied)}},
			},
			keep: 1,
			want: []string{r[0]},
		},
		{
			name:    "partial extractions are left alone",
			present: r[:2],
			tmp:     []string{r[6], r[7]},
			sources: map[string]src{"a": {current: r[1], history: []Revision{rev(r[1], OutcomeApplied)}}},
			keep:    1,
			want:    []string{r[1]},
		},
		{
			name:    "no sources",
			present: r[:2],
			keep:    5,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			for _, d := range tc.present {
				addRevision(t, s, d)
			}
			var tmps []string
			for _, d := range tc.tmp {
				p, _ := s.RevisionDir(d)
				p += ".tmp-42"
				mustWrite(t, filepath.Join(p, "f"), "partial")
				tmps = append(tmps, p)
			}
			st := &State{}
			for name, sc := range tc.sources {
				if sc.current != "" {
					if err := s.Switch(name, sc.current); err != nil {
						t.Fatal(err)
					}
				}
				st.Source(name).History = sc.history
			}
			removed, err := s.GC(st, tc.keep)
			if err != nil {
				t.Fatalf("GC: %v", err)
			}
			var left []string
			for _, d := range tc.present {
				if s.Has(d) {
					left = append(left, d)
				}
			}
			slices.Sort(left)
			want := slices.Sorted(slices.Values(tc.want))
			if !slices.Equal(left, want) {
				t.Errorf("left %v, want %v", short(left), short(want))
			}
			var wantRemoved []string
			for _, d := range tc.present {
				if !slices.Contains(tc.want, d) {
					wantRemoved = append(wantRemoved, d)
				}
			}
			slices.Sort(removed)
			slices.Sort(wantRemoved)
			if !slices.Equal(removed, wantRemoved) {
				t.Errorf("removed %v, want %v", short(removed), short(wantRemoved))
			}
			for _, p := range tmps {
				if !exists(filepath.Join(p, "f")) {
					t.Errorf("GC removed the partial extraction %s", p)
				}
			}
			// Every source's current still resolves.
			for name, sc := range tc.sources {
				if sc.current == "" {
					continue
				}
				if _, err := os.Stat(filepath.Join(s.CurrentDir(name), "digest.txt")); err != nil {
					t.Errorf("current of %s broken after GC: %v", name, err)
				}
			}
		})
	}
}

func TestGCIgnoresForeignEntries(t *testing.T) {
	s := openStore(t)
	for _, name := range []string{"README", "lost+found"} {
		mustWrite(t, filepath.Join(s.Dir(), "revisions", name, "f"), "x")
	}
	d := dg("x")
	addRevision(t, s, d)
	removed, err := s.GC(&State{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{d}) {
		t.Errorf("removed %v, want [%s]", removed, d)
	}
	for _, name := range []string{"README", "lost+found"} {
		if !exists(filepath.Join(s.Dir(), "revisions", name)) {
			t.Errorf("GC removed revisions/%s, which is no revision", name)
		}
	}
	if got := revisionNames(t, s); len(got) != 2 {
		t.Errorf("revisions/ holds %v", got)
	}
}

// short abbreviates digests in failure messages.
func short(ds []string) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d[:min(len(d), 15)]
	}
	return out
}
