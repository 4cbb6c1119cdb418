package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/keylesstest"
	"github.com/berth-dev/berth/internal/testenv"
)

// plan is a rollout plan whose first percentage wave is already open and
// whose last opens in a year.
const planYAML = `rollout:
  waves:
    - name: canary
      selector: {ring: canary}
    - name: early
      percent: 10
    - name: all
      percent: 100
      after: 8760h
`

// planOut is what berth rollout plan --output json prints.
type planOut struct {
	Digest   string
	Verified bool
	Created  time.Time
	Waves    []struct {
		Name    string
		Percent float64
		Opens   time.Time
		Open    bool
	}
	Device *struct {
		ID        string
		Verdict   string
		Reason    string
		Placement struct {
			Name     string
			Bucket   int
			Selected bool
		}
	}
	Statements *struct {
		Latest *struct {
			Action, Reason, Signer string
		}
		Ignored []struct{ Reason string }
	}
}

// bucket computes a device's bucket from the documented formula, without
// the code under test.
func bucket(repo, id string) int { return testenv.FleetBucket(repo, id) }

// TestRolloutPlanAndStatements pushes releases with a rollout plan to the
// real registry (no referrers API: statements go through the fallback
// tag), refuses a bad plan at push, and steers the rollout with signed
// statements through the berth binary: the newest valid statement wins,
// and a statement from an untrusted key or copied from another release
// changes nothing.
func TestRolloutPlanAndStatements(t *testing.T) {
	e := newEnv(t)
	e.pushImage("acme/hello:1.0.0")
	repo := e.fleet(e.reg.Host() + "/acme/hello:1.0.0")
	stateFile := filepath.Join(repo, "berth.yaml")
	base, err := os.ReadFile(stateFile)
	if err != nil {
		t.Fatal(err)
	}

	// A plan whose percentages go backwards is refused at push.
	bad := strings.Replace(planYAML, "percent: 100", "percent: 5", 1)
	if err := os.WriteFile(stateFile, append(append([]byte{}, base...), bad...), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.GitCommitAll(t, repo, testenv.GitOptions{Message: "bad plan"})
	msg := e.fail("push", repo, e.url("fleet/line-3:bad"), "--sign-key", e.key)
	if !strings.Contains(msg, "percentages are cumulative and never decrease") || !strings.Contains(msg, "must cover every device") {
		t.Errorf("push of a bad plan: %q", msg)
	}

	// Release A, signed in the legacy format so that its referrers
	// fallback tag holds statements only.
	if err := os.WriteFile(stateFile, append(append([]byte{}, base...), planYAML...), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.GitCommitAll(t, repo, testenv.GitOptions{Message: "plan"})
	var a pushResult
	e.okJSON(&a, "push", repo, e.url("fleet/line-3:a"), "--sign-key", e.key, "--signature-format", "legacy")

	// Devices: one canary, one in the open 10 %, one in the last wave,
	// chosen with the formula of the README.
	var early, late string
	for i := 0; early == "" || late == ""; i++ {
		id := fmt.Sprintf("d%03d", i)
		if b := bucket("fleet/line-3", id); b < 1000 && early == "" {
			early = id
		} else if b >= 1000 && late == "" {
			late = id
		}
	}
	plan := func(args ...string) planOut {
		t.Helper()
		var p planOut
		e.okJSON(&p, append([]string{"rollout", "plan", e.url("fleet/line-3:a"), "--key", e.pub}, args...)...)
		return p
	}
	p := plan("--device-id", early)
	created, _ := time.Parse(time.RFC3339, a.Created)
	if !p.Verified || p.Digest != a.Digest || !p.Created.Equal(created) || len(p.Waves) != 3 ||
		!p.Waves[1].Open || p.Waves[2].Open || !p.Waves[2].Opens.Equal(created.Add(8760*time.Hour)) {
		t.Fatalf("plan = %+v", p)
	}
	if d := p.Device; d == nil || d.Placement.Name != "early" || d.Placement.Bucket != bucket("fleet/line-3", early) || d.Verdict != "adopt" {
		t.Errorf("device %s: %+v", early, p.Device)
	}
	if d := plan("--device-id", late).Device; d == nil || d.Placement.Name != "all" || d.Verdict != "wait-wave" || !strings.Contains(d.Reason, "waiting for wave all (opens ") {
		t.Errorf("device %s: %+v", late, d)
	}
	if d := plan("--device-id", late, "--device-labels", "ring=canary,line=3").Device; d == nil || d.Placement.Name != "canary" || !d.Placement.Selected || d.Verdict != "adopt" {
		t.Errorf("canary device: %+v", d)
	}
	if p.Statements == nil || p.Statements.Latest != nil {
		t.Errorf("statements before any: %+v", p.Statements)
	}
	text := e.ok("rollout", "plan", e.url("fleet/line-3:a"), "--key", e.pub, "--device-id", late)
	if !strings.Contains(text, "wave all") || !strings.Contains(text, "device "+late+": wave all (by its hash bucket") {
		t.Errorf("plan text:\n%s", text)
	}

	// Pause, then resume a second later: resume wins; the device adopts.
	e.ok("rollout", "pause", e.url("fleet/line-3:a"), "--sign-key", e.key, "--reason", "canary crash loop")
	if p := plan("--device-id", early); p.Statements.Latest == nil || p.Statements.Latest.Action != "pause" ||
		p.Statements.Latest.Reason != "canary crash loop" || p.Device.Verdict != "paused" {
		t.Fatalf("after pause: %+v %+v", p.Statements, p.Device)
	}
	time.Sleep(1100 * time.Millisecond) // statements are signed to the second
	e.ok("rollout", "resume", e.url("fleet/line-3:a"), "--sign-key", e.key)
	if p := plan("--device-id", early); p.Statements.Latest.Action != "resume" || p.Device.Verdict != "adopt" {
		t.Fatalf("after resume: %+v %+v", p.Statements.Latest, p.Device)
	}

	// An abort signed by a key the devices do not trust changes nothing,
	// and is reported.
	time.Sleep(1100 * time.Millisecond)
	strangerKey, _ := e.keyPair("stranger")
	e.ok("rollout", "abort", e.url("fleet/line-3:a"), "--sign-key", strangerKey)
	if p := plan("--device-id", early); p.Statements.Latest.Action != "resume" || len(p.Statements.Ignored) != 1 ||
		!strings.Contains(p.Statements.Ignored[0].Reason, "not signed by a trusted signer") {
		t.Fatalf("after an untrusted abort: %+v", p.Statements)
	}

	// Release B gets a (newer) abort; its statements copied onto A name B:
	// ignored as copies.
	if err := os.WriteFile(filepath.Join(repo, "NOTES"), []byte("b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.GitCommitAll(t, repo, testenv.GitOptions{Message: "b"})
	var b pushResult
	e.okJSON(&b, "push", repo, e.url("fleet/line-3:b"), "--sign-key", e.key, "--signature-format", "legacy")
	time.Sleep(1100 * time.Millisecond)
	e.ok("rollout", "abort", e.url("fleet/line-3:b"), "--sign-key", e.key)
	hexA, hexB := strings.TrimPrefix(a.Digest, "sha256:"), strings.TrimPrefix(b.Digest, "sha256:")
	e.ok("tag", e.url("fleet/line-3:sha256-"+hexB), "sha256-"+hexA)
	p = plan("--device-id", early)
	if p.Statements.Latest != nil || len(p.Statements.Ignored) != 1 || !strings.Contains(p.Statements.Ignored[0].Reason, "copied from another release") {
		t.Fatalf("after copying b's statements onto a: %+v", p.Statements)
	}
	if p.Device.Verdict != "adopt" {
		t.Errorf("a copied abort changed the verdict: %+v", p.Device)
	}
	var pb planOut
	e.okJSON(&pb, "rollout", "plan", e.url("fleet/line-3:b"), "--key", e.pub, "--device-id", early)
	if pb.Statements.Latest == nil || pb.Statements.Latest.Action != "abort" || pb.Device.Verdict != "aborted" {
		t.Errorf("b: %+v %+v", pb.Statements, pb.Device)
	}

	// Keyless: the predicate is written for cosign attest; a bundle signed
	// elsewhere is attached with --bundle. (Devices verify it with their
	// keyless trust policy; the key-only plan here reports it untrusted.)
	predFile := filepath.Join(t.TempDir(), "abort.json")
	var w struct{ Predicate, Digest, Action string }
	e.okJSON(&w, "rollout", "abort", e.url("fleet/line-3:b"), "--predicate-out", predFile, "--reason", "keyless")
	pred, err := os.ReadFile(predFile)
	if err != nil || w.Predicate != predFile || !strings.Contains(string(pred), `"action":"abort"`) || !strings.Contains(string(pred), b.Digest) {
		t.Fatalf("predicate-out: %+v %s %v", w, pred, err)
	}
	s, err := keylesstest.New()
	if err != nil {
		t.Fatal(err)
	}
	bj, err := s.SignPredicate(b.Digest, "https://berth.dev/rollout/statement/v1", pred, "https://github.com/acme/fleet/.github/workflows/rollout.yml@refs/heads/main", "https://token.actions.githubusercontent.com")
	if err != nil {
		t.Fatal(err)
	}
	bundleFile := filepath.Join(t.TempDir(), "abort.bundle.json")
	if err := os.WriteFile(bundleFile, bj, 0o644); err != nil {
		t.Fatal(err)
	}
	if msg := e.fail("rollout", "abort", e.url("fleet/line-3:a"), "--bundle", bundleFile); !strings.Contains(msg, "names "+b.Digest) {
		t.Errorf("a bundle about b attached to a: %q", msg)
	}
	e.ok("rollout", "abort", e.url("fleet/line-3:b"), "--bundle", bundleFile)
	e.okJSON(&pb, "rollout", "plan", e.url("fleet/line-3:b"), "--key", e.pub)
	if pb.Statements.Latest == nil || pb.Statements.Latest.Action != "abort" || len(pb.Statements.Ignored) != 1 {
		t.Errorf("b with a keyless bundle under a key-only policy: %+v", pb.Statements)
	}

	// Usage errors say what to do.
	if msg := e.fail("rollout", "pause", e.url("fleet/line-3:a")); !strings.Contains(msg, "--sign-key") {
		t.Errorf("pause without a key: %q", msg)
	}
	if msg := e.fail("rollout", "plan", e.url("fleet/line-3:a"), "--device-labels", "ring=canary"); !strings.Contains(msg, "--device-id") {
		t.Errorf("labels without id: %q", msg)
	}
}
