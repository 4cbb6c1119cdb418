package converge

import (
	"slices"
	"testing"
	"time"

	"github.com/berth-dev/berth/state"
)

func TestLimiter(t *testing.T) {
	l := Limiter{Max: 2, Window: time.Minute}
	t0 := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	for i, step := range []struct {
		at       time.Duration
		ok       bool
		restores int
		until    time.Duration
	}{
		{0, true, 0, 0},
		{10 * time.Second, true, 0, 0},
		{20 * time.Second, false, 2, time.Minute}, // two within the minute: refused until the first leaves
		{59 * time.Second, false, 2, time.Minute},
		{60 * time.Second, true, 0, 0}, // the first left the window
		{61 * time.Second, false, 2, 70 * time.Second},
	} {
		ok, n, until := l.Allow("p", t0.Add(step.at))
		wantUntil := time.Time{}
		if !step.ok {
			wantUntil = t0.Add(step.until)
		}
		if ok != step.ok || n != step.restores || !until.Equal(wantUntil) {
			t.Errorf("step %d at %s: Allow = %v, %d, %s; want %v, %d, %s", i, step.at, ok, n, until, step.ok, step.restores, wantUntil)
		}
	}
	if !l.Saturated("p", t0.Add(61*time.Second)) || l.Saturated("p", t0.Add(121*time.Second)) {
		t.Error("Saturated does not follow the window")
	}
	if l.Saturated("other", t0) {
		t.Error("a key never restored is saturated")
	}
	l.Allow("q", t0)
	l.Allow("q", t0)
	l.Forget("q")
	if ok, _, _ := l.Allow("q", t0); !ok {
		t.Error("Forget kept the restores")
	}
}

func TestState(t *testing.T) {
	st := &state.DeviceState{Apps: []state.App{
		{Name: "web", Compose: &state.Compose{Path: "apps/web"}},
		{Name: "db", Compose: &state.Compose{Path: "apps/db"}},
		{Name: "m", Helm: &state.Helm{Path: "charts/m"}},
	}}
	isCompose := func(a state.App) bool { return a.Compose != nil }
	rev := state.Revision{Source: "line-3", Digest: "sha256:2", State: st}
	var s State
	names := func(ts []Target) []string {
		var out []string
		for _, t := range ts {
			out = append(out, t.Rev.Source+"/"+t.App.Name+"@"+t.Rev.Digest)
		}
		return out
	}
	// Nothing applied yet: the apps the revision deploys.
	if got := names(s.TargetsOf(rev, isCompose)); !slices.Equal(got, []string{"line-3/web@sha256:2", "line-3/db@sha256:2"}) {
		t.Errorf("TargetsOf before any apply = %v", got)
	}
	if s.Known("line-3") || s.Target("line-3", "web") != nil {
		t.Error("a source never applied is known")
	}
	// Apply left web on revision 1 (rolled back) and db on 2.
	old := state.Revision{Source: "line-3", Digest: "sha256:1", State: st}
	s.SetTargets("line-3", map[string]Target{"web": {Rev: old, App: st.Apps[0]}, "db": {Rev: rev, App: st.Apps[1]}})
	s.SetTargets("line-4", map[string]Target{})
	if got := names(s.TargetsOf(rev, isCompose)); !slices.Equal(got, []string{"line-3/db@sha256:2", "line-3/web@sha256:1"}) {
		t.Errorf("TargetsOf after an apply = %v", got)
	}
	if tg := s.Target("line-3", "web"); tg == nil || tg.Rev.Digest != "sha256:1" {
		t.Errorf("Target(web) = %+v", tg)
	}
	if !s.Known("line-3") || s.Known("line-4") {
		t.Error("Known: want line-3 only (line-4 has no app deployed)")
	}
	if got := names(s.Targets()); !slices.Equal(got, []string{"line-3/db@sha256:2", "line-3/web@sha256:1"}) {
		t.Errorf("Targets = %v", got)
	}
	if s.Lock("line-3") != s.Lock("line-3") || s.Lock("line-3") == s.Lock("line-4") {
		t.Error("Lock is not one mutex per source")
	}
}
