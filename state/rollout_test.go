package state

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestParseRollout checks every field of testdata/good/rollout.yaml.
func TestParseRollout(t *testing.T) {
	data, err := os.ReadFile("testdata/good/rollout.yaml")
	if err != nil {
		t.Fatal(err)
	}
	st, err := Parse(FileName, data)
	if err != nil {
		t.Fatal(err)
	}
	want := &Rollout{Waves: []Wave{
		{Name: "canary", Selector: map[string]string{"ring": "canary"}},
		{Name: "line-3", Selector: map[string]string{"berth.dev/line": "3", "site": "berlin"}, After: time.Hour},
		{Name: "early", Percent: 10, After: 2 * time.Hour},
		{Name: "half", Percent: 50.25, After: 2 * time.Hour},
		{Name: "all", Percent: 100, After: 24 * time.Hour},
	}}
	if !reflect.DeepEqual(st.Rollout, want) {
		t.Errorf("rollout = %+v\nwant %+v", st.Rollout, want)
	}
	if got := []int{st.Rollout.Waves[0].Bucket(), st.Rollout.Waves[2].Bucket(), st.Rollout.Waves[3].Bucket(), st.Rollout.Waves[4].Bucket()}; !reflect.DeepEqual(got, []int{0, 1000, 5025, Buckets}) {
		t.Errorf("buckets = %v", got)
	}
	if s := st.Rollout.Waves[1].String(); s != "line-3 (berth.dev/line=3,site=berlin)" {
		t.Errorf("String = %q", s)
	}
	if s := st.Rollout.Waves[3].String(); s != "half (50.25%)" {
		t.Errorf("String = %q", s)
	}
}

// TestParseRolloutOptional: no rollout, or a null one, is no plan.
func TestParseRolloutOptional(t *testing.T) {
	for _, extra := range []string{"", "rollout:\n", "rollout: null\n"} {
		st, err := Parse(FileName, []byte("apiVersion: berth.dev/v1\nkind: DeviceState\napps: []\n"+extra))
		if err != nil || st.Rollout != nil {
			t.Errorf("%q: rollout = %+v, %v", extra, st, err)
		}
	}
}

// TestParseRolloutTooManyWaves caps the plan.
func TestParseRolloutTooManyWaves(t *testing.T) {
	var b strings.Builder
	b.WriteString("apiVersion: berth.dev/v1\nkind: DeviceState\napps: []\nrollout:\n  waves:\n")
	for i := 0; i <= MaxWaves; i++ {
		b.WriteString("    - {name: w" + strings.Repeat("x", i) + ", percent: 100}\n")
	}
	_, err := Parse(FileName, []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "at most 32") {
		t.Errorf("err = %v", err)
	}
}

// checkRollout fails unless r holds what Parse guarantees.
func checkRollout(t *testing.T, r *Rollout) {
	t.Helper()
	if r == nil {
		return
	}
	if len(r.Waves) == 0 || len(r.Waves) > MaxWaves {
		t.Fatalf("%d waves", len(r.Waves))
	}
	names := map[string]bool{}
	prevAfter, prevPct := time.Duration(-1), 0.0
	for _, w := range r.Waves {
		if names[w.Name] || !labelRE.MatchString(w.Name) {
			t.Fatalf("bad or duplicate wave name %q", w.Name)
		}
		names[w.Name] = true
		if (w.Selector == nil) == (w.Percent == 0) {
			t.Fatalf("wave %q: not exactly one of selector and percent", w.Name)
		}
		if w.After < prevAfter || w.After < 0 {
			t.Fatalf("wave %q: after goes backwards", w.Name)
		}
		prevAfter = w.After
		if w.Selector == nil {
			if w.Percent < prevPct || w.Percent > 100 {
				t.Fatalf("wave %q: percent %v after %v", w.Name, w.Percent, prevPct)
			}
			prevPct = w.Percent
		}
	}
	if r.Waves[len(r.Waves)-1].Bucket() != Buckets {
		t.Fatal("the last wave does not cover every device")
	}
}
