package cli

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/berth-dev/berth/internal/fleetsim"
	"github.com/berth-dev/berth/internal/keylesstest"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/policy/rollout/statement"
	"github.com/berth-dev/berth/reconcile/metrics"
)

// TestRolloutStatusAndWatchOutput runs rollout status and watch against a
// real Prometheus fed by simulated devices, for a release pushed to an
// in-process registry: the JSON is in berth's one style (no null), the
// text names the waves, and watch without a breaker ends at once on a
// complete rollout.
func TestRolloutStatusAndWatchOutput(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	url := "oci://" + strings.TrimPrefix(srv.URL, "http://") + "/fleet/line-3:1.5.0"
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	yaml := "apiVersion: berth.dev/v1\nkind: DeviceState\napps: []\nrollout:\n  waves:\n    - name: canary\n      selector: {ring: canary}\n    - name: all\n      percent: 100\n"
	if err := os.WriteFile(filepath.Join(src, "berth.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COSIGN_PASSWORD", "pw")
	keys := filepath.Join(t.TempDir(), "cosign")
	if _, errOut, code := runBerth(t, "generate-key", "--prefix", keys); code != 0 {
		t.Fatal(errOut)
	}
	out, errOut, code := runBerth(t, "push", testenv.GitRepo(t, src), url, "--sign-key", keys+".key", "--output", "json")
	var pushed struct{ Digest string }
	if code != 0 || json.Unmarshal([]byte(out), &pushed) != nil {
		t.Fatalf("push: exit %d %s %s", code, out, errOut)
	}

	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{})
	for _, id := range []string{"c1", "d1"} {
		d, err := fleetsim.NewDevice(fleetsim.Options{URL: p.WriteURL(), Dir: t.TempDir()}, id, map[string]string{"ring": map[string]string{"c1": "canary", "d1": "main"}[id]})
		if err != nil {
			t.Fatal(err)
		}
		d.Apply("line-3", pushed.Digest, "1.5.0", time.Now())
		d.Tick(context.Background(), time.Now())
		if st := d.Reporter.Status(); st.LastError != "" {
			t.Fatal(st.LastError)
		}
	}
	args := []string{"--prometheus", p.URL(), "--source", "line-3"}

	out, errOut, code = runBerth(t, append([]string{"rollout", "status", url, "--output", "json"}, args...)...)
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	checkJSONStyle(t, "rollout status", out)
	var st struct {
		Digest   string
		Complete bool
		Waves    []struct {
			Name    string
			Healthy int
		}
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Digest != pushed.Digest || !st.Complete || len(st.Waves) != 2 ||
		st.Waves[0].Name != "canary" || st.Waves[0].Healthy != 1 || st.Waves[1].Healthy != 1 {
		t.Fatalf("status: %v %s", err, out)
	}
	if !strings.Contains(errOut, "signature not verified") {
		t.Errorf("status without --key does not say the plan is unverified: %q", errOut)
	}

	out, errOut, code = runBerth(t, append([]string{"rollout", "status", url}, args...)...)
	if code != 0 || !strings.Contains(out, ": complete") || !strings.Contains(out, "wave canary       open: 1 devices, 1 on the release, 1 healthy, 0 failed") {
		t.Fatalf("status text: exit %d\n%s%s", code, out, errOut)
	}

	out, errOut, code = runBerth(t, append([]string{"rollout", "watch", url, "--output", "json", "--poll", "100ms"}, args...)...)
	if code != 0 {
		t.Fatalf("watch: exit %d: %s", code, errOut)
	}
	checkJSONStyle(t, "rollout watch", out)
	var w struct {
		Outcome string
		Polls   int
	}
	if err := json.Unmarshal([]byte(out), &w); err != nil || w.Outcome != "complete" || w.Polls != 1 {
		t.Fatalf("watch: %v %s", err, out)
	}

	// A device fails it: watch --action abort signs an abort, exits 2 and
	// names the device; the abort verifies with the key.
	d, err := fleetsim.NewDevice(fleetsim.Options{URL: p.WriteURL(), Dir: t.TempDir()}, "d2", map[string]string{"ring": "main"})
	if err != nil {
		t.Fatal(err)
	}
	d.Fail("line-3", pushed.Digest, metrics.OutcomeRefused)
	d.Tick(context.Background(), time.Now())
	out, errOut, code = runBerth(t, append([]string{"rollout", "watch", url, "--output", "json", "--poll", "100ms",
		"--max-failed", "0", "--sign-key", keys + ".key", "--action", "abort"}, args...)...)
	if code != 2 || !strings.Contains(errOut, "abort statement pushed") || !strings.Contains(errOut, ": d2") {
		t.Fatalf("watch with a failure: exit %d\n%s%s", code, out, errOut)
	}
	checkJSONStyle(t, "rollout watch (tripped)", out)
	var tripped struct {
		Outcome string
		Trips   []struct {
			Wave   string
			Failed []string
		}
		Statement struct{ Action, Digest, Reason string }
	}
	if err := json.Unmarshal([]byte(out), &tripped); err != nil || tripped.Outcome != "paused" || len(tripped.Trips) != 1 || tripped.Trips[0].Wave != "all" ||
		tripped.Statement.Action != "abort" || tripped.Statement.Digest != pushed.Digest || !strings.Contains(tripped.Statement.Reason, "d2") {
		t.Fatalf("watch with a failure: %v %s", err, out)
	}
	out, errOut, code = runBerth(t, "rollout", "plan", url, "--key", keys+".pub", "--output", "json")
	var plan struct {
		Statements struct{ Latest struct{ Action string } }
	}
	if code != 0 || json.Unmarshal([]byte(out), &plan) != nil || plan.Statements.Latest.Action != "abort" {
		t.Fatalf("plan after the abort: exit %d %s %s", code, out, errOut)
	}

	// Keyless: --predicate-out writes the pause predicate for cosign
	// attest instead of signing, and exits 2 the same way; a bundle signed
	// keyless over it attaches to the release.
	pred := filepath.Join(t.TempDir(), "pause.json")
	if _, errOut, code := runBerth(t, append([]string{"rollout", "watch", url, "--max-failed", "0", "--sign-key", keys + ".key", "--predicate-out", pred}, args...)...); code == 0 || !strings.Contains(errOut, "not both") {
		t.Fatalf("watch with a key and --predicate-out: exit %d: %s", code, errOut)
	}
	out, errOut, code = runBerth(t, append([]string{"rollout", "watch", url, "--output", "json", "--poll", "100ms", "--max-failed", "0", "--predicate-out", pred}, args...)...)
	if code != 2 || !strings.Contains(errOut, "pause predicate written to "+pred) || !strings.Contains(errOut, "cosign attest --new-bundle-format --type "+statement.PredicateType) {
		t.Fatalf("keyless watch with a failure: exit %d\n%s%s", code, out, errOut)
	}
	var keyless struct {
		Outcome, Predicate string
		Statement          struct{ Action, Digest, Reason string }
	}
	if err := json.Unmarshal([]byte(out), &keyless); err != nil || keyless.Outcome != "paused" || keyless.Predicate != pred ||
		keyless.Statement.Action != "pause" || keyless.Statement.Digest != pushed.Digest {
		t.Fatalf("keyless watch: %v %s", err, out)
	}
	predBytes, err := os.ReadFile(pred)
	if err != nil || !strings.Contains(string(predBytes), `"action":"pause"`) || !strings.Contains(string(predBytes), pushed.Digest) || !strings.Contains(string(predBytes), "d2") {
		t.Fatalf("predicate file: %v %s", err, predBytes)
	}
	s, err := keylesstest.New()
	if err != nil {
		t.Fatal(err)
	}
	bj, err := s.SignPredicate(pushed.Digest, statement.PredicateType, predBytes, "https://github.com/acme/fleet/.github/workflows/release.yml@refs/heads/main", "https://token.actions.githubusercontent.com")
	if err != nil {
		t.Fatal(err)
	}
	bundleFile := filepath.Join(t.TempDir(), "pause.bundle.json")
	if err := os.WriteFile(bundleFile, bj, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := runBerth(t, "rollout", "pause", url, "--bundle", bundleFile); code != 0 {
		t.Fatalf("attach the keyless pause: exit %d: %s", code, errOut)
	}

	// Prometheus gone: status says which query failed.
	p.Stop()
	_, errOut, code = runBerth(t, append([]string{"rollout", "status", url}, args...)...)
	if code == 0 || !strings.Contains(errOut, "prometheus query failed") || !strings.Contains(errOut, "berth_device_info") {
		t.Fatalf("status with Prometheus down: exit %d: %s", code, errOut)
	}
}
