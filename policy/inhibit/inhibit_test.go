package inhibit

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 8, 12, 0, 0, 0, time.UTC)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"minimal", `{"until":"2026-12-08T14:30:00Z"}`, ""},
		{"full", `{"app":"web","until":"2026-12-08T15:30:00+01:00","reason":"batch 4711","by":"mes"}`, ""},
		{"other app", `{"app":"db","until":"2026-12-08T14:30:00Z"}`, `says app "db"`},
		{"unknown field", `{"until":"2026-12-08T14:30:00Z","for":"30m"}`, "unknown field"},
		{"no until", `{"reason":"x"}`, "no until"},
		{"bad until", `{"until":"in 30 minutes"}`, "cannot parse"},
		{"two objects", `{"until":"2026-12-08T14:30:00Z"} {}`, "data after"},
		{"empty", ``, "EOF"},
		{"list", `[]`, "cannot unmarshal"},
		{"long reason", `{"until":"2026-12-08T14:30:00Z","reason":"` + strings.Repeat("x", MaxReason+1) + `"}`, "reason must be"},
		{"huge", strings.Repeat(" ", MaxFileSize+1), "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, err := Parse("web", []byte(tc.in))
			if tc.want == "" {
				if err != nil || in.App != "web" || !in.Until.Equal(time.Date(2026, 12, 8, 14, 30, 0, 0, time.UTC)) {
					t.Fatalf("Parse = %+v, %v", in, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalid saying %q", err, tc.want)
			}
		})
	}
}

func write(t *testing.T, dir, name, content string, mtime time.Time) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// TestStore checks Set, Release, List and Holding with a fixed clock, the
// caps, and that what a container writes by hand works too.
func TestStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", DirName)
	s := Open(dir)
	if got, problems, err := s.List(t0); got != nil || problems != nil || err != nil {
		t.Fatalf("missing folder: %v %v %v", got, problems, err)
	}
	in, err := s.Set(Inhibitor{App: "web", Until: t0.Add(30 * time.Minute), Reason: "batch running", By: "cli"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "web.json")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("web.json: %v %v", fi, err)
	}
	// Set caps until at MaxFor.
	if long, err := s.Set(Inhibitor{App: "db", Until: t0.Add(30 * 24 * time.Hour)}, t0); err != nil || !long.Until.Equal(t0.Add(MaxFor)) {
		t.Fatalf("Set for 30 days = %+v, %v", long, err)
	}
	for _, bad := range []Inhibitor{{App: "Web", Until: t0.Add(time.Hour)}, {App: "web", Until: t0.Add(-time.Minute)}, {App: "web"}} {
		if _, err := s.Set(bad, t0); !errors.Is(err, ErrInvalid) {
			t.Errorf("Set(%+v) = %v, want ErrInvalid", bad, err)
		}
	}

	// The files were written now, not at t0: say they were written at t0.
	for _, f := range []string{"web.json", "db.json"} {
		if err := os.Chtimes(filepath.Join(dir, f), t0, t0); err != nil {
			t.Fatal(err)
		}
	}

	// By hand, as a container would: real files, some of them wrong.
	write(t, dir, "press.json", `{"until":"2026-12-08T13:00:00Z","reason":"tool change","by":"plc"}`, t0)
	write(t, dir, "old.json", `{"until":"2026-12-08T11:00:00Z"}`, t0.Add(-2*time.Hour))        // expired
	write(t, dir, "forever.json", `{"until":"2999-01-01T00:00:00Z"}`, t0.Add(-6*24*time.Hour)) // capped: 1 day left
	write(t, dir, "broken.json", `{"until":"2026-12-08T13:00`, t0.Add(-30*time.Minute))        // holds 30 more minutes
	write(t, dir, "stale-broken.json", `{"until":`, t0.Add(-2*time.Hour))                      // held for an hour, over
	write(t, dir, "README", `inhibitors go here`, t0)                                          // not an inhibitor
	write(t, dir, "Bad_Name.json", `{"until":"2026-12-08T13:00:00Z"}`, t0)                     // not an app name
	write(t, dir, ".web-123", `{"until":`, t0)                                                 // being written: skipped
	if err := os.Mkdir(filepath.Join(dir, "dir.json"), 0o755); err != nil {
		t.Fatal(err)
	}

	got, problems, err := s.List(t0)
	if err != nil {
		t.Fatal(err)
	}
	var apps []string
	for _, g := range got {
		apps = append(apps, g.String())
	}
	want := []string{
		"broken until 2026-12-08T12:30:00Z (unreadable inhibitor file, invalid inhibitor: unexpected EOF (want {\"until\": \"2026-12-08T14:30:00Z\", \"reason\": \"...\"}))",
		"db until 2026-12-15T12:00:00Z",
		"forever until 2026-12-09T12:00:00Z",
		"press until 2026-12-08T13:00:00Z (tool change, by plc)",
		"web until 2026-12-08T12:30:00Z (batch running, by cli)",
	}
	if strings.Join(apps, "\n") != strings.Join(want, "\n") {
		t.Errorf("List:\n%s\nwant:\n%s", strings.Join(apps, "\n"), strings.Join(want, "\n"))
	}
	files := map[string]bool{}
	for _, p := range problems {
		files[p.File] = true
	}
	for _, f := range []string{"broken.json", "stale-broken.json", "README", "Bad_Name.json", "dir.json"} {
		if !files[f] {
			t.Errorf("no problem reported for %s: %+v", f, problems)
		}
	}
	if files[".web-123"] || len(problems) != 5 {
		t.Errorf("problems = %+v", problems)
	}
	if in.String() != "web until 2026-12-08T12:30:00Z (batch running, by cli)" {
		t.Errorf("Set returned %s", in)
	}

	// Holding: only the apps asked about, and only while they hold.
	h, _, err := s.Holding(t0, "web", "api")
	if err != nil || len(h) != 1 || h[0].App != "web" {
		t.Errorf("Holding(web, api) = %+v, %v", h, err)
	}
	if h, _, _ := s.Holding(t0.Add(31*time.Minute), "web"); len(h) != 0 {
		t.Errorf("an expired inhibitor holds: %+v", h)
	}
	if h, _, _ := s.Holding(t0); len(h) != 5 {
		t.Errorf("Holding() = %d inhibitors, want every one", len(h))
	}

	// Release.
	if ok, err := s.Release("web"); !ok || err != nil {
		t.Errorf("Release(web) = %v, %v", ok, err)
	}
	if ok, err := s.Release("web"); ok || err != nil {
		t.Errorf("Release(web) again = %v, %v", ok, err)
	}
	if _, err := s.Release("../state"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Release(../state) = %v", err)
	}
	if h, _, _ := s.Holding(t0, "web"); len(h) != 0 {
		t.Errorf("released inhibitor holds: %+v", h)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"app":"web","until":"2026-12-08T15:30:00+01:00","reason":"batch 4711","by":"mes"}`))
	f.Add([]byte(`{"until":"0001-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"until":"2026-12-08T14:30:00Z"} x`))
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := Parse("web", data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		if in.App != "web" || in.Until.IsZero() || in.check() != nil {
			t.Fatalf("accepted %+v", in)
		}
	})
}
