package cli

import (
	"bytes"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/store"
)

// run runs berth in-process and returns stdout, stderr and the exit code.
func runBerth(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Main(args, &out, &errOut)
	return out.String(), errOut.String(), code
}

// TestStatusWithNothingSaysWhereItLooked: with no agent, no state and no
// config, status fails naming the socket, state folder and config it
// tried (issue 14, point 5: it printed "no sources" and exited 0).
func TestStatusWithNothingSaysWhereItLooked(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	stdout, stderr, code := runBerth(t, "status", "--config", cfg, "--state-dir", dir)
	if code == 0 {
		t.Fatalf("status with nothing to show: exit 0, stdout %q", stdout)
	}
	for _, want := range []string{dir, cfg + " is missing", "state.json", "berth.sock", "--config"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr %q lacks %q", stderr, want)
		}
	}
	if strings.Contains(stdout, "no sources") {
		t.Errorf("stdout %q", stdout)
	}
}

// TestListNoMatchSaysSo: a range that matches no tag prints nothing on
// stdout ([] with --output json) and says so on stderr (issue 14, point 8).
func TestListNoMatchSaysSo(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"1.0.0", "1.2.0", "main"} {
		ref, err := name.ParseReference(host + "/fleet/line-3:" + tag)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
	}
	repo := "oci://" + host + "/fleet/line-3"
	stdout, stderr, code := runBerth(t, "list", repo, "--insecure", "--semver", ">=5.0.0")
	if code != 0 || stdout != "" {
		t.Errorf("no match: exit %d, stdout %q", code, stdout)
	}
	if !strings.Contains(stderr, `no tag of `+repo+` matches --semver ">=5.0.0" (3 tags listed`) {
		t.Errorf("no match: stderr %q", stderr)
	}
	stdout, _, code = runBerth(t, "list", repo, "--insecure", "--semver", ">=5.0.0", "--output", "json")
	if code != 0 || strings.TrimSpace(stdout) != "[]" {
		t.Errorf("json: exit %d, stdout %q", code, stdout)
	}
	// A match prints the tags and nothing on stderr.
	stdout, stderr, code = runBerth(t, "list", repo, "--insecure", "--semver", ">=1.1.0")
	if code != 0 || stdout != "1.2.0\n" || stderr != "" {
		t.Errorf("match: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// TestIgnoredRegistryFlagIsAnError: a registry flag given to a command
// that reaches no registry is refused, saying where the setting belongs
// (issue 14, point 2: berth agent --insecure was silently ignored).
func TestIgnoredRegistryFlagIsAnError(t *testing.T) {
	for _, args := range [][]string{
		{"status", "--insecure"},
		{"history", "line-3", "--ca-file", "ca.pem"},
		{"init", t.TempDir(), "--docker-config", "c.json"},
	} {
		_, stderr, code := runBerth(t, args...)
		if code == 0 || !strings.Contains(stderr, "does not apply to berth "+args[0]) {
			t.Errorf("berth %v: exit %d, %q", args, code, stderr)
		}
	}
	var out, errOut bytes.Buffer
	code := AgentMain([]string{"--config", "agent.yaml", "--insecure"}, &out, &errOut, nil)
	if code == 0 || !strings.Contains(errOut.String(), "insecure: true") {
		t.Errorf("berth-agent --insecure: exit %d, %q", code, errOut.String())
	}
}

// TestStatusAfterRollback: a suspended source shows no next reconcile, and
// the rolled-back revision keeps the version it had (issue 14, point 10).
func TestStatusAfterRollback(t *testing.T) {
	d1 := "sha256:" + strings.Repeat("1", 64)
	d2 := "sha256:" + strings.Repeat("2", 64)
	now := time.Now()
	st := &api.Status{Sources: []api.SourceStatus{{Name: "line-3", SourceState: store.SourceState{
		Suspended: true,
		Applied:   &store.Revision{Digest: d1, Outcome: store.OutcomeRolledBack, Time: now},
		History: []store.Revision{
			{Digest: d1, Outcome: store.OutcomeRolledBack, Time: now},
			{Digest: d2, Version: "1.1.0", Outcome: store.OutcomeApplied, Time: now.Add(-time.Hour)},
			{Digest: d1, Version: "1.0.0", Outcome: store.OutcomeApplied, Time: now.Add(-2 * time.Hour)},
		},
	}, NextReconcile: now.Add(time.Minute)}}}
	var b bytes.Buffer
	printStatus(&b, st)
	out := b.String()
	if !strings.Contains(out, "applied:  "+d1+" (version 1.0.0)") {
		t.Errorf("the rolled-back revision lost its version:\n%s", out)
	}
	if strings.Contains(out, "next:") || !strings.Contains(out, "SUSPENDED") {
		t.Errorf("a suspended source shows a next reconcile:\n%s", out)
	}
	if store.OutcomeRolledBack != "rolled-back" {
		t.Errorf("outcome spelt %q", store.OutcomeRolledBack)
	}
}

// TestMissingArgumentsShowUsage: a command given too few arguments says
// how to call it (issue 14, point 12).
func TestMissingArgumentsShowUsage(t *testing.T) {
	for args, want := range map[string]string{
		"push ./fleet":  "Usage: berth push DIR",
		"tag":           "Usage: berth tag",
		"history":       "Usage: berth history SOURCE",
		"bundle create": "Usage: berth bundle create",
	} {
		_, stderr, code := runBerth(t, strings.Fields(args)...)
		if code == 0 || !strings.Contains(stderr, want) {
			t.Errorf("berth %s: exit %d, %q; want %q", args, code, stderr, want)
		}
	}
}
