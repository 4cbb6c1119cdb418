package store

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// FuzzParseState decodes arbitrary state.json content, as the agent and
// `berth status` do at start. It must never panic; a state it accepts is
// one the agent can use (every source present, Source and Record work on
// it) and survives WriteState's encoding unchanged.
func FuzzParseState(f *testing.F) {
	full, err := json.MarshalIndent(fullState(), "", "  ")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(full)
	for _, s := range []string{
		`{}`, `{"sources":null}`, `{"sources":{"a":null}}`, `{"sources":{"a":{}}}`,
		`{"sources":{"line-3":{"applied":{"digest":"sha256:00","time":"2025-01-01T00:00:00Z","outcome":"applied","apps":[{"name":"web","kind":"compose","outcome":"applied","detail":{"x":1}}]},"history":[{"digest":"sha256:00","time":"0001-01-01T00:00:00Z","outcome":"applied"}]}}}`,
		`{"sources":{"a":{"retryAfter":"2025-01-01T00:00:00+14:00","failures":-1}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseState(b)
		if err != nil {
			if st != nil {
				t.Fatal("state returned with an error")
			}
			return
		}
		if st.Sources == nil {
			t.Fatal("nil Sources")
		}
		for name, ss := range st.Sources {
			if ss == nil {
				t.Fatalf("source %q is nil", name)
			}
		}
		enc, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			// Accepted but unwritable: the agent could never record
			// anything again.
			t.Fatalf("accepted state cannot be written back: %v", err)
		}
		again, err := parseState(enc)
		if err != nil {
			t.Fatalf("written state cannot be read back: %v\n%s", err, enc)
		}
		enc2, _ := json.MarshalIndent(again, "", "  ")
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip changed the state:\n%s\n%s", enc, enc2)
		}
		for name := range st.Sources {
			ss := st.Source(name)
			ss.Record(Revision{Digest: "sha256:00", Time: time.Unix(0, 0).UTC(), Outcome: OutcomeApplied})
			if len(ss.History) > MaxHistory || ss.History[0].Digest != "sha256:00" {
				t.Fatalf("Record on %q: %d entries", name, len(ss.History))
			}
		}
	})
}
