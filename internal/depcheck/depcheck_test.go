package depcheck

import (
	"context"
	"strings"
	"testing"
	"time"
)

// rules is berth's import direction (see the package documentation and
// README.md's package map).
var rules = []Rule{
	{From: "state/...", To: "...", Except: []string{"internal/yamlstrict", "internal/errdef", "internal/labels"},
		Why: "state holds the contracts at the bottom: it imports no other berth package but leaf helpers"},
	{From: "apply/...", To: "reconcile/...", Why: "appliers receive a state.Revision and return state reports: they never import the agent"},
	{From: "source/...", To: "reconcile/...", Why: "the delivery path knows nothing of the agent"},
	{From: "policy/...", To: "reconcile/...", Why: "trust policy knows nothing of the agent"},
	{From: "source/...", To: "apply/...", Why: "publishing and delivery do not depend on how a revision is applied"},
	{From: "policy/...", To: "apply/...", Why: "trust policy does not depend on how a revision is applied"},
	{From: "policy/...", To: "source/...", Why: "trust policy is below the delivery path that uses it"},
	{From: "apply/compose/...", To: "apply/helm/...", Why: "one applier does not reach into another"},
	{From: "apply/helm/...", To: "apply/compose/...", Why: "one applier does not reach into another"},
	{From: "reconcile/...", To: "internal/cli", Why: "the CLI parses flags and renders; the agent does not depend on it"},
	{From: "apply/...", To: "internal/cli", Why: "the CLI is at the top"},
	{From: "source/...", To: "internal/cli", Why: "the CLI is at the top"},
	{From: "policy/...", To: "internal/cli", Why: "the CLI is at the top"},
	{From: "reconcile/...", To: "policy/rollout/progress/...", Why: "the agent reports by remote-write; it does not link the publishing side's PromQL reader (policy/... -> reconcile/... and apply/... cover the other direction)"},
	{From: "internal/errdef", To: "...", Why: "error classes are a leaf"},
	{From: "internal/yamlstrict", To: "...", Why: "the YAML helper is a leaf"},
	{From: "internal/labels", To: "...", Why: "the label checks are a leaf"},
	{From: "internal/readcap", To: "...", Why: "the capped file reader is a leaf"},
}

// TestImportDirection fails on any import against berth's direction.
func TestImportDirection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pkgs, err := List(ctx, "../..")
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 20 {
		t.Fatalf("go list found %d packages of the module, want the whole module", len(pkgs))
	}
	for _, v := range Check(pkgs, rules) {
		if v.Direct {
			t.Errorf("%s", v)
		} else {
			t.Errorf("%s (through another package)", v)
		}
	}
}

// TestCheck proves the checker on a tree shaped like berth before the
// contracts moved to the bottom: every forbidden edge is found, allowed
// ones are not.
func TestCheck(t *testing.T) {
	pkgs := []Package{
		{ImportPath: "apply/compose", Imports: []string{"reconcile", "source/mirror"}, Deps: []string{"reconcile", "reconcile/store", "source/mirror", "state"}},
		{ImportPath: "source/lock", Imports: []string{"apply/devicestate"}, Deps: []string{"apply/devicestate", "internal/yamlstrict"}},
		{ImportPath: "state", Imports: []string{"internal/yamlstrict"}, Deps: []string{"internal/yamlstrict"}},
		{ImportPath: "policy/cosign"},
		{ImportPath: "reconcile", Imports: []string{"apply/compose"}, Deps: []string{"apply/compose", "state"}},
	}
	var got []string
	for _, v := range Check(pkgs, rules) {
		got = append(got, v.From+"->"+v.To)
	}
	want := "apply/compose->reconcile apply/compose->reconcile/store source/lock->apply/devicestate"
	if strings.Join(got, " ") != want {
		t.Errorf("violations = %v, want %s", got, want)
	}
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, path string
		want          bool
	}{
		{"apply/...", "apply", true},
		{"apply/...", "apply/compose", true},
		{"apply/...", "applyx", false},
		{"...", "anything/at/all", true},
		{"internal/cli", "internal/cli", true},
		{"internal/cli", "internal/cli/x", false},
	} {
		if got := Match(tc.pattern, tc.path); got != tc.want {
			t.Errorf("Match(%q, %q) = %v", tc.pattern, tc.path, got)
		}
	}
}
