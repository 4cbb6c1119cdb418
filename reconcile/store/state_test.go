package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/state"
)

// fullState sets every field of the state.
func fullState() *State {
	t0 := time.Date(2025, 3, 14, 15, 9, 26, 535000000, time.UTC)
	r1 := Revision{
		Digest:      dg("r1"),
		URL:         "oci://registry.example.com/fleet/line-3:1.2.0@" + dg("r1"),
		Tag:         "1.2.0",
		Version:     "1.2.0",
		Created:     t0.Add(-time.Hour),
		Annotations: map[string]string{"org.opencontainers.image.revision": "main@sha1:abc", "org.opencontainers.image.source": "https://git.example.com/fleet"},
		Mirror:      "mirror.example.com",
		Via:         &Via{Tag: ViaSource, Manifest: "mirror.example.com", Signatures: "mirror.example.com", Layer: "mirror.example.com"},
		Time:        t0,
		Outcome:     OutcomeApplied,
		Apps: []state.AppStatus{
			{Name: "web", Kind: "compose", Outcome: "applied", Detail: json.RawMessage(`{"services":{"nginx":"running"}}`)},
			{Name: "metrics", Kind: "helm", Outcome: "failed", Message: "timed out"},
		},
	}
	r0 := Revision{Digest: dg("r0"), Time: t0.Add(-24 * time.Hour), Outcome: OutcomeFailed, Error: "apply: compose: exit status 1"}
	return &State{Sources: map[string]*SourceState{
		"line-3": {
			Applied:      &r1,
			Last:         &r1,
			LastSuccess:  t0,
			Suspended:    true,
			Failures:     3,
			FailedDigest: dg("r0"),
			RetryAfter:   t0.Add(time.Minute),
			History:      []Revision{r1, r0},
		},
		"empty": {},
	}}
}

// canonical is the compact JSON of st, for comparisons that ignore how
// json.RawMessage was indented.
func canonical(t *testing.T, st *State) string {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestStateRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   *State
	}{
		{"full", fullState()},
		{"empty", &State{Sources: map[string]*SourceState{}}},
		{"nil sources", &State{}},
		{"long history", func() *State {
			st := &State{}
			ss := st.Source("app")
			for i := range MaxHistory + 10 {
				ss.Record(Revision{Digest: dg(fmt.Sprint(i)), Outcome: OutcomeApplied, Time: time.Unix(int64(i), 0).UTC()})
			}
			return st
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := WriteState(dir, tc.st); err != nil {
				t.Fatalf("WriteState: %v", err)
			}
			got, err := ReadState(dir)
			if err != nil {
				t.Fatalf("ReadState: %v", err)
			}
			if got.Sources == nil {
				t.Fatal("ReadState returned nil Sources")
			}
			want := tc.st
			if want.Sources == nil {
				want = &State{Sources: map[string]*SourceState{}}
			}
			if g, w := canonical(t, got), canonical(t, want); g != w {
				t.Errorf("round trip:\n got %s\nwant %s", g, w)
			}
			fi, err := os.Stat(filepath.Join(dir, StateFile))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("state.json mode %v, want 0600", fi.Mode().Perm())
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("state folder holds %v, want only %s", names, StateFile)
			}
		})
	}
}

func TestStateRoundTripFields(t *testing.T) {
	dir := t.TempDir()
	want := fullState()
	if err := WriteState(dir, want); err != nil {
		t.Fatal(err)
	}
	st, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, w := st.Sources["line-3"], want.Sources["line-3"]
	switch {
	case got == nil:
		t.Fatal("source line-3 lost")
	case !got.LastSuccess.Equal(w.LastSuccess), !got.RetryAfter.Equal(w.RetryAfter):
		t.Errorf("times: got %v/%v, want %v/%v", got.LastSuccess, got.RetryAfter, w.LastSuccess, w.RetryAfter)
	case !got.Applied.Created.Equal(w.Applied.Created) || !got.Applied.Time.Equal(w.Applied.Time):
		t.Errorf("revision times: got %v/%v", got.Applied.Created, got.Applied.Time)
	case got.Applied.Annotations["org.opencontainers.image.revision"] != "main@sha1:abc":
		t.Errorf("annotations: %v", got.Applied.Annotations)
	case len(got.History) != 2 || got.History[1].Outcome != OutcomeFailed || got.History[1].Error == "":
		t.Errorf("history: %+v", got.History)
	case !got.Suspended || got.Failures != 3 || got.FailedDigest != w.FailedDigest:
		t.Errorf("flags: %+v", got)
	}
	var detail map[string]map[string]string
	if err := json.Unmarshal(got.Applied.Apps[0].Detail, &detail); err != nil || detail["services"]["nginx"] != "running" {
		t.Errorf("app detail = %s (%v)", got.Applied.Apps[0].Detail, err)
	}
	if _, ok := st.Sources["empty"]; !ok {
		t.Error("empty source lost")
	}
}

func TestWriteStateReplaces(t *testing.T) {
	dir := t.TempDir()
	for i := range 5 {
		st := &State{}
		st.Source("app").Failures = i
		if err := WriteState(dir, st); err != nil {
			t.Fatal(err)
		}
		got, err := ReadState(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got.Source("app").Failures != i {
			t.Fatalf("after write %d read %d", i, got.Source("app").Failures)
		}
	}
	// The file is indented JSON ending with a newline.
	b, _ := os.ReadFile(filepath.Join(dir, StateFile))
	if !bytes.HasSuffix(b, []byte("}\n")) || !bytes.Contains(b, []byte("\n  \"sources\"")) {
		t.Errorf("state.json is not indented JSON with a final newline:\n%s", b)
	}
}

func TestWriteStateFails(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	mustWrite(t, file, "x")
	dirAsState := filepath.Join(base, "dirstate")
	if err := os.MkdirAll(filepath.Join(dirAsState, StateFile, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, dir string }{
		{"missing folder", filepath.Join(base, "missing")},
		{"folder is a file", file},
		{"state.json is a non-empty folder", dirAsState},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := WriteState(tc.dir, fullState())
			if err == nil {
				t.Fatal("WriteState succeeded")
			}
			if !strings.Contains(err.Error(), StateFile) {
				t.Errorf("error %q does not name %s", err, StateFile)
			}
			matches, _ := filepath.Glob(filepath.Join(tc.dir, "."+StateFile+".tmp-*"))
			if len(matches) > 0 {
				t.Errorf("temporary files left: %v", matches)
			}
		})
	}
}

func TestReadStateMissing(t *testing.T) {
	for _, dir := range []string{t.TempDir(), filepath.Join(t.TempDir(), "does", "not", "exist")} {
		st, err := ReadState(dir)
		if err != nil {
			t.Fatalf("ReadState(%s): %v", dir, err)
		}
		if st == nil || st.Sources == nil || len(st.Sources) != 0 {
			t.Errorf("ReadState(%s) = %+v, want an empty state with a map", dir, st)
		}
		// The empty state is usable.
		st.Source("x").Failures++
	}
}

func TestReadStateCorrupt(t *testing.T) {
	good, err := json.MarshalIndent(fullState(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, data string
	}{
		{"empty file", ""},
		{"truncated", string(good[:len(good)/2])},
		{"truncated by one byte", string(good[:len(good)-1])},
		{"not json", "sources:\n  app: {}\n"},
		{"zeros", "\x00\x00\x00\x00"},
		{"wrong type", `{"sources": 5}`},
		{"wrong field type", `{"sources": {"app": {"failures": "many"}}}`},
		{"bad time", `{"sources": {"app": {"lastSuccess": "yesterday"}}}`},
		{"trailing garbage", string(good) + "}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			mustWrite(t, filepath.Join(dir, StateFile), tc.data)
			st, err := ReadState(dir)
			if err == nil {
				t.Fatalf("ReadState = %+v, want an error", st)
			}
			if path := filepath.Join(dir, StateFile); !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name %s", err, path)
			}
			if !strings.Contains(err.Error(), "move it aside") {
				t.Errorf("error %q does not say how to recover", err)
			}
		})
	}
}

func TestReadStateUnreadable(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, StateFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadState(dir); err == nil || !strings.Contains(err.Error(), "read state") {
		t.Errorf("ReadState of a folder = %v, want a read error", err)
	}
}

func TestReadStateNullSources(t *testing.T) {
	for _, data := range []string{`{}`, `{"sources": null}`} {
		dir := t.TempDir()
		mustWrite(t, filepath.Join(dir, StateFile), data)
		st, err := ReadState(dir)
		if err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		if st.Sources == nil {
			t.Errorf("%s: Sources is nil", data)
		}
	}
}

// TestReadStateNullSource is FuzzParseState's finding: a source recorded
// as null was returned as a nil *SourceState, on which the agent panicked
// at start (State.Source returned it).
func TestReadStateNullSource(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, StateFile), `{"sources": {"line-3": null, "web": {"suspended": true}}}`)
	st, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ss := st.Source("line-3"); ss == nil || ss.Suspended || ss.Applied != nil {
		t.Errorf("null source read as %+v, want an empty state", ss)
	}
	if !st.Source("web").Suspended {
		t.Error("the other source lost its state")
	}
}

func TestStateSource(t *testing.T) {
	var st State
	a := st.Source("a")
	if a == nil || st.Sources == nil {
		t.Fatal("Source did not create the source")
	}
	a.Failures = 7
	if st.Source("a") != a || st.Source("a").Failures != 7 {
		t.Error("Source returned another SourceState for the same name")
	}
	if st.Source("b") == a || len(st.Sources) != 2 {
		t.Errorf("sources = %v", st.Sources)
	}
}

func TestRecord(t *testing.T) {
	mk := func(n int) []Revision {
		var h []Revision
		for i := range n {
			h = append(h, Revision{Digest: dg(fmt.Sprint("old", i)), Outcome: OutcomeApplied})
		}
		return h
	}
	for _, tc := range []struct {
		name    string
		before  int
		records int
		wantLen int
	}{
		{"first", 0, 1, 1},
		{"a few", 3, 2, 5},
		{"just below the bound", MaxHistory - 1, 1, MaxHistory},
		{"at the bound", MaxHistory, 1, MaxHistory},
		{"many beyond", 0, MaxHistory * 3, MaxHistory},
		{"over a longer history", MaxHistory + 5, 1, MaxHistory},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := mk(tc.before)
			ss := &SourceState{History: old}
			var added []Revision
			for i := range tc.records {
				r := Revision{Digest: dg(fmt.Sprint("new", i)), Outcome: OutcomeFailed}
				ss.Record(r)
				added = append(added, r)
			}
			if len(ss.History) != tc.wantLen {
				t.Fatalf("len(History) = %d, want %d", len(ss.History), tc.wantLen)
			}
			// Newest first: the added ones in reverse, then the old ones.
			var want []Revision
			for i := len(added) - 1; i >= 0; i-- {
				want = append(want, added[i])
			}
			want = append(want, old...)
			for i, r := range ss.History {
				if r.Digest != want[i].Digest {
					t.Fatalf("History[%d] = %s, want %s", i, r.Digest, want[i].Digest)
				}
			}
		})
	}
}

func TestRecordDoesNotAlias(t *testing.T) {
	old := []Revision{{Digest: dg("a")}, {Digest: dg("b")}}
	ss := &SourceState{History: old}
	ss.Record(Revision{Digest: dg("c")})
	if old[0].Digest != dg("a") || old[1].Digest != dg("b") {
		t.Errorf("Record modified the previous history slice: %v", old)
	}
}

// TestReadStateLegacyRolledBack: state.json written before the outcome was
// spelt rolled-back reads as OutcomeRolledBack, so a rollback recorded then
// still counts as applied.
func TestReadStateLegacyRolledBack(t *testing.T) {
	dir := t.TempDir()
	js := `{"sources":{"a":{"applied":{"digest":"sha256:1","outcome":"rolledback"},"last":{"digest":"sha256:1","outcome":"rolledback"},"history":[{"digest":"sha256:1","outcome":"rolledback"},{"digest":"sha256:2","outcome":"applied"}]}}}`
	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte(js), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := st.Sources["a"]
	if s.Applied.Outcome != OutcomeRolledBack || s.Last.Outcome != OutcomeRolledBack || s.History[0].Outcome != OutcomeRolledBack || s.History[1].Outcome != OutcomeApplied {
		t.Errorf("outcomes %q %q %q %q", s.Applied.Outcome, s.Last.Outcome, s.History[0].Outcome, s.History[1].Outcome)
	}
}
