package agentrun

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/reconcile/config"
)

func parse(t *testing.T, apply string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	cfg, err := config.Parse(filepath.Join(dir, "agent.yaml"), []byte("stateDir: "+dir+"\nsources:\n  - name: a\n    url: oci://127.0.0.1:1/x\n    ref: {tag: v1}\n    insecureSkipVerify: true\n"+apply))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestProbe: --check-config warns of an applier whose engine or cluster
// does not answer, naming the socket or kubeconfig it tried (issue 14,
// point 12).
func TestProbe(t *testing.T) {
	dir := t.TempDir()
	sock := "unix://" + filepath.Join(dir, "no-docker.sock")
	kube := filepath.Join(dir, "no-kubeconfig.yaml")
	cfg := parse(t, "apply:\n  compose: {host: '"+sock+"'}\n  helm: {kubeconfig: "+kube+"}\n")
	got := Runner{}.Probe(context.Background(), cfg)
	if len(got) != 2 || !strings.Contains(got[0], "compose applier") || !strings.Contains(got[0], sock) ||
		!strings.Contains(got[1], "helm applier") || !strings.Contains(got[1], kube) {
		t.Errorf("warnings %q", got)
	}
	if got := (Runner{}).Probe(context.Background(), parse(t, "")); len(got) != 0 {
		t.Errorf("no applier enabled: warnings %q", got)
	}
}

func TestAppliersLinked(t *testing.T) {
	if got := (Runner{}).Appliers(); !slices.Equal(got, []string{"compose", "helm"}) {
		t.Errorf("Appliers() = %v", got)
	}
}
