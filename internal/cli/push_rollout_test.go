package cli

import (
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/state"
)

// TestPushCopiesRolloutPlan: `berth push` copies berth.yaml's rollout plan
// into the signed manifest (state.RolloutAnnotation), parsed back to the
// same plan; a release without a plan carries none, even when
// --annotation tries to set one.
func TestPushCopiesRolloutPlan(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	const base = "apiVersion: berth.dev/v1\nkind: DeviceState\napps: []\n"
	const plan = "rollout:\n  waves:\n    - {name: canary, selector: {ring: canary}}\n    - {name: early, percent: 12.5, after: 90m}\n    - {name: all, percent: 100, after: 24h}\n"
	for _, tc := range []struct {
		name, yaml string
		extra      []string
	}{
		{"with a plan", base + plan, []string{"--annotation", state.RolloutAnnotation + `={"waves":[{"name":"x","percent":100}]}`}},
		{"without a plan", base, []string{"--annotation", state.RolloutAnnotation + `={"waves":[{"name":"x","percent":100}]}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join(t.TempDir(), "src")
			if err := os.MkdirAll(src, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(src, "berth.yaml"), []byte(tc.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			url := "oci://" + host + "/fleet/line-3:1.0.0"
			out, errOut, code := runBerth(t, append([]string{"push", testenv.GitRepo(t, src), url, "--output", "json"}, tc.extra...)...)
			var pushed struct{ Digest string }
			if code != 0 || json.Unmarshal([]byte(out), &pushed) != nil {
				t.Fatalf("push: exit %d %s %s", code, out, errOut)
			}
			ref, err := name.NewDigest(host+"/fleet/line-3@"+pushed.Digest, name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			img, err := remote.Image(ref)
			if err != nil {
				t.Fatal(err)
			}
			m, err := img.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			got, ok := m.Annotations[state.RolloutAnnotation]
			st, err := state.Parse(state.FileName, []byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if st.Rollout == nil {
				if ok {
					t.Errorf("a release without a plan carries %s=%s", state.RolloutAnnotation, got)
				}
				return
			}
			if got != st.Rollout.Annotation() {
				t.Fatalf("annotation %q, want %q", got, st.Rollout.Annotation())
			}
			back, err := state.ParseRolloutAnnotation(got)
			if err != nil || len(back.Waves) != 3 || back.Waves[1].Percent != 12.5 || back.Waves[1].After.Minutes() != 90 {
				t.Errorf("annotation parsed back: %+v, %v", back, err)
			}
		})
	}
}
