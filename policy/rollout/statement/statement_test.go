package statement

import (
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/policy/rollout"
)

var digestA = "sha256:" + strings.Repeat("a", 64)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"ok", `{"action":"pause","digest":"` + digestA + `","signedAt":"2026-12-08T10:00:00Z","reason":"bad canary"}`, ""},
		{"no reason", `{"action":"abort","digest":"` + digestA + `","signedAt":"2026-12-08T10:00:00+01:00"}`, ""},
		{"unknown field", `{"action":"pause","digest":"` + digestA + `","signedAt":"2026-12-08T10:00:00Z","force":true}`, "unknown field"},
		{"two objects", `{"action":"pause","digest":"` + digestA + `","signedAt":"2026-12-08T10:00:00Z"}{}`, "data after"},
		{"bad action", `{"action":"stop","digest":"` + digestA + `","signedAt":"2026-12-08T10:00:00Z"}`, "unknown rollout action"},
		{"no action", `{"digest":"` + digestA + `","signedAt":"2026-12-08T10:00:00Z"}`, "unknown rollout action"},
		{"bad digest", `{"action":"pause","digest":"sha256:abc","signedAt":"2026-12-08T10:00:00Z"}`, "64 lowercase hex"},
		{"no time", `{"action":"pause","digest":"` + digestA + `"}`, "signedAt"},
		{"bad time", `{"action":"pause","digest":"` + digestA + `","signedAt":"yesterday"}`, "cannot parse"},
		{"long reason", `{"action":"pause","digest":"` + digestA + `","signedAt":"2026-12-08T10:00:00Z","reason":"` + strings.Repeat("x", MaxReason+1) + `"}`, "reason is"},
		{"huge", `{"action":"pause","reason":"` + strings.Repeat("x", maxPredicate) + `"}`, "at most"},
		{"not an object", `["pause"]`, "statement"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse([]byte(tc.in))
			if tc.want == "" {
				if err != nil || s.Digest != digestA || s.SignedAt.IsZero() {
					t.Fatalf("Parse = %+v, %v", s, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestPredicateRoundTrip(t *testing.T) {
	in := Statement{Action: rollout.Abort, Digest: digestA, SignedAt: time.Date(2026, 12, 8, 11, 0, 0, 999, time.FixedZone("CET", 3600)), Reason: "crash loop"}
	p, err := in.Predicate()
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"action":"abort","digest":"` + digestA + `","signedAt":"2026-12-08T10:00:00Z","reason":"crash loop"}`; string(p) != want {
		t.Errorf("predicate %s\nwant %s", p, want)
	}
	out, err := Parse(p)
	if err != nil || out.Action != in.Action || !out.SignedAt.Equal(in.SignedAt.Truncate(time.Second)) || out.Reason != in.Reason {
		t.Errorf("round trip %+v, %v", out, err)
	}
	if _, err := (Statement{Action: "nope", Digest: digestA, SignedAt: in.SignedAt}).Predicate(); err == nil {
		t.Error("an invalid statement encoded")
	}
}

func TestNewer(t *testing.T) {
	t0 := time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC)
	st := func(a rollout.Action, d time.Duration) Statement {
		return Statement{Action: a, Digest: digestA, SignedAt: t0.Add(d)}
	}
	for _, tc := range []struct {
		a, b Statement
		want bool
	}{
		{st(rollout.Resume, time.Second), st(rollout.Abort, 0), true},
		{st(rollout.Pause, 0), st(rollout.Resume, time.Second), false},
		{st(rollout.Abort, 0), st(rollout.Pause, 0), true},
		{st(rollout.Pause, 0), st(rollout.Resume, 0), true},
		{st(rollout.Resume, 0), st(rollout.Pause, 0), false},
		{st(rollout.Pause, 0), st(rollout.Pause, 0), false},
	} {
		if got := tc.a.Newer(tc.b); got != tc.want {
			t.Errorf("%s@%v newer than %s@%v = %v", tc.a.Action, tc.a.SignedAt, tc.b.Action, tc.b.SignedAt, got)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"action":"pause","digest":"` + digestA + `","signedAt":"2026-12-08T10:00:00Z","reason":"x"}`))
	f.Add([]byte(`{"action":"abort","digest":"sha256:00","signedAt":"0001-01-01T00:00:00Z"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err != nil {
			if s != (Statement{}) {
				t.Fatal("a statement returned with an error")
			}
			return
		}
		if s.Check() != nil {
			t.Fatalf("accepted an invalid statement %+v", s)
		}
		p, err := s.Predicate()
		if err != nil {
			t.Fatalf("accepted statement does not encode: %v", err)
		}
		if _, err := Parse(p); err != nil {
			t.Fatalf("re-parse: %v", err)
		}
	})
}
