package state

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestRolloutAnnotationRoundTrip: every plan of testdata/good encodes to
// an annotation that parses back to the same plan.
func TestRolloutAnnotationRoundTrip(t *testing.T) {
	data, err := os.ReadFile("testdata/good/rollout.yaml")
	if err != nil {
		t.Fatal(err)
	}
	st, err := Parse(FileName, data)
	if err != nil {
		t.Fatal(err)
	}
	ann := st.Rollout.Annotation()
	want := `{"waves":[{"name":"canary","selector":{"ring":"canary"}},{"name":"line-3","selector":{"berth.dev/line":"3","site":"berlin"},"after":"1h0m0s"},` +
		`{"name":"early","percent":10,"after":"2h0m0s"},{"name":"half","percent":50.25,"after":"2h0m0s"},{"name":"all","percent":100,"after":"24h0m0s"}]}`
	if ann != want {
		t.Errorf("Annotation() =\n%s\nwant\n%s", ann, want)
	}
	got, err := ParseRolloutAnnotation(ann)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st.Rollout) {
		t.Errorf("parsed back = %+v\nwant %+v", got, st.Rollout)
	}
}

// TestParseRolloutAnnotationBad: the annotation follows berth.yaml's rules.
func TestParseRolloutAnnotationBad(t *testing.T) {
	for _, tc := range []struct{ value, want string }{
		{"", "empty"},
		{"null", "empty document"},
		{"[]", "must be a mapping"},
		{`{"waves":[]}`, "needs at least one wave"},
		{`{"waves":[{"name":"a","percent":50}]}`, "must cover every device"},
		{`{"waves":[{"name":"a","percent":50,"after":"2h"},{"name":"b","percent":100,"after":"1h"}]}`, "never goes backwards"},
		{`{"waves":[{"name":"a","percent":100}],"extra":1}`, "extra"},
		{`{"waves":[{"name":"a","percent":100}]}` + strings.Repeat(" ", maxRolloutAnnotation), "more than"},
	} {
		r, err := ParseRolloutAnnotation(tc.value)
		if err == nil || r != nil {
			t.Errorf("%.60q: plan %+v, error %v; want an error", tc.value, r, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), RolloutAnnotation) {
			t.Errorf("%.60q: error %q, want it to start with %s and say %q", tc.value, err, RolloutAnnotation, tc.want)
		}
	}
}

// FuzzParseRolloutAnnotation: the annotation comes from a manifest; a plan
// parsed from it keeps Parse's guarantees and survives a round trip.
func FuzzParseRolloutAnnotation(f *testing.F) {
	f.Add(`{"waves":[{"name":"canary","selector":{"ring":"canary"}},{"name":"all","percent":100,"after":"2h0m0s"}]}`)
	f.Add(`{waves: [{name: a, percent: 10}, {name: b, percent: 100, after: 1h}]}`)
	f.Add(`{"waves":[{"name":"a","percent":50.25,"after":"-1s"}]}`)
	f.Fuzz(func(t *testing.T, value string) {
		r, err := ParseRolloutAnnotation(value)
		if err != nil {
			if r != nil {
				t.Fatal("a plan returned with an error")
			}
			if !strings.HasPrefix(err.Error(), RolloutAnnotation) {
				t.Fatalf("error does not name the annotation: %v", err)
			}
			return
		}
		checkRollout(t, r)
		back, err := ParseRolloutAnnotation(r.Annotation())
		if err != nil || !reflect.DeepEqual(back, r) {
			t.Fatalf("round trip of %q: %+v, %v", r.Annotation(), back, err)
		}
	})
}
