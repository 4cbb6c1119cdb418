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
	"github.com/berth-dev/berth/internal/testenv"
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
	out, errOut, code := runBerth(t, "push", testenv.GitRepo(t, src), url, "--output", "json")
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

	// Prometheus gone: status says which query failed.
	p.Stop()
	_, errOut, code = runBerth(t, append([]string{"rollout", "status", url}, args...)...)
	if code == 0 || !strings.Contains(errOut, "prometheus query failed") || !strings.Contains(errOut, "berth_device_info") {
		t.Fatalf("status with Prometheus down: exit %d: %s", code, errOut)
	}
}
