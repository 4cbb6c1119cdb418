package cli

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/state"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite the golden files of testdata")

// TestPrintStatus renders the status of a device whose apps come from
// three appliers, one of which (kind "wasm") the CLI has never heard of:
// every applier's report is shown the same way, from the shared view, so
// adding an applier needs no change here.
func TestPrintStatus(t *testing.T) {
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	st := &api.Status{
		Sources: []api.SourceStatus{{
			Name: "line-3", URL: "oci://registry.plant.local/fleet/line-3", Ref: "semver >=1.0.0", Interval: "1m0s",
			NextReconcile: at.Add(time.Minute),
			SourceState: store.SourceState{
				Applied: &store.Revision{
					Digest: "sha256:1111", Version: "1.4.0", Time: at,
					Annotations: map[string]string{"org.opencontainers.image.revision": "main@sha1:abc"},
					Via:         &store.Via{Tag: "source", Manifest: "registry.plant.local/acme", Layer: "registry.plant.local/acme"},
					Apps: []state.AppStatus{
						{Name: "web", Kind: "compose", Outcome: "applied", View: &state.View{Unit: "project berth-line-3-web",
							Parts: []state.Part{{Name: "web", State: "exited", Ref: "ghcr.io/acme/web:1@sha256:aa"}}}},
						{Name: "metrics", Kind: "helm", Outcome: "applied", View: &state.View{Unit: "release metrics/metrics", State: "revision 1 deployed"}},
						{Name: "edge", Kind: "wasm", Outcome: "failed", Message: "module trapped\nat start", View: &state.View{Unit: "module edge", State: "stopped",
							NotReady: []string{"module edge: trapped"}}},
					},
				},
				Last: &store.Revision{Outcome: store.OutcomeApplied, Time: at},
			},
		}},
		Apps: []state.AppReport{
			{Source: "line-3", App: "web", Kind: "compose",
				View: &state.View{Unit: "project berth-line-3-web", Parts: []state.Part{
					{Name: "web", State: "running", Health: "healthy", Ref: "registry.plant.local/acme/web:1@sha256:aa", Mirror: "registry.plant.local/acme"},
					{Name: "worker", State: "running", Ref: "ghcr.io/acme/worker:1@sha256:bb"},
				}},
				Drift: &state.Drift{Restores: 2, LastRestore: at.Add(-time.Hour), Drifted: []string{`service "web" has 0 of 1 containers`}}},
			{Source: "line-3", App: "metrics", Kind: "helm",
				View: &state.View{Unit: "release metrics/metrics", State: "revision 2 deployed",
					Parts: []state.Part{{Name: "chart", Ref: "metrics 2.3.1", Digest: "sha256:cc"}}},
				LastApply: &state.ApplyResult{Outcome: "applied", Time: at},
				Drift:     &state.Drift{LastCheck: at, Flapping: false}},
			{Source: "line-3", App: "edge", Kind: "wasm", Error: "runtime not answering",
				Drift: &state.Drift{Drifted: []string{"module edge stopped"}, LastError: "restart refused"}},
			{Source: "other", App: "web", Kind: "compose", View: &state.View{Unit: "project not-this-one"}},
		},
	}
	var out bytes.Buffer
	printStatus(&out, st)
	golden := filepath.Join("testdata", "status.golden")
	if *updateGolden {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update-golden to write it)", err)
	}
	if out.String() != string(want) {
		t.Errorf("status output:\n%s\nwant:\n%s", out.String(), want)
	}
}
