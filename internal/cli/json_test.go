package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/berth-dev/berth/internal/testenv"
)

var lowerCamel = regexp.MustCompile(`^[a-z][a-zA-Z0-9]*$`)

// checkJSONStyle fails unless out is JSON whose object keys are all
// lowerCamelCase and that holds no null (lists are [] when empty).
func checkJSONStyle(t *testing.T, what, out string) {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Errorf("%s: --output json printed no JSON: %v\n%s", what, err, out)
		return
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case nil:
			t.Errorf("%s: null at %s", what, path)
		case map[string]any:
			for k, e := range x {
				if !lowerCamel.MatchString(k) && !strings.HasPrefix(path, ".annotations") {
					t.Errorf("%s: key %q at %s is not lowerCamelCase", what, k, path)
				}
				walk(path+"."+k, e)
			}
		case []any:
			for _, e := range x {
				walk(path+"[]", e)
			}
		}
	}
	walk("", v)
}

// TestJSONOutputOneStyle runs the commands that a script reads with
// --output json and checks each prints JSON in one key style, with []
// for empty lists (issue 14, point 9: agent --check-config and login
// ignored --output json; diff printed Added and null).
func TestJSONOutputOneStyle(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	dir := t.TempDir()
	t.Setenv("COSIGN_PASSWORD", "pw")
	dockerConfig := filepath.Join(dir, "config.json")
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "berth.yaml"), []byte("apiVersion: berth.dev/v1\nkind: DeviceState\napps: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	repo := testenv.GitRepo(t, src)
	url := "oci://" + host + "/fleet/json"
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte("stateDir: "+dir+"/state\nsources:\n  - name: a\n    url: "+url+"\n    ref: {tag: v1}\n    insecureSkipVerify: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"version"},
		{"init", filepath.Join(dir, "new")},
		{"generate-key", "--prefix", filepath.Join(dir, "cosign")},
		{"login", host, "-u", "me", "-p", "pw", "--docker-config", dockerConfig},
		{"push", repo, url + ":v1", "--docker-config", dockerConfig},
		{"list", url, "--docker-config", dockerConfig},
		{"diff", repo, url + ":v1", "--docker-config", dockerConfig},
	} {
		stdout, stderr, code := runBerth(t, append(args, "--output", "json")...)
		if code != 0 {
			t.Errorf("berth %v: exit %d: %s", args, code, stderr)
			continue
		}
		checkJSONStyle(t, "berth "+args[0], stdout)
	}
	var out, errOut bytes.Buffer
	if code := AgentMain([]string{"--config", cfg, "--check-config", "--output", "json"}, &out, &errOut, nil); code != 0 {
		t.Errorf("berth-agent --check-config: exit %d: %s", code, errOut.String())
	}
	checkJSONStyle(t, "berth-agent --check-config", out.String())
}

// TestOneShotSaysItOnce: push prints one summary on stdout and no INFO
// logs on stderr unless asked for (issue 14, point 11: it logged INFO
// lines, then printed the same summary).
func TestOneShotSaysItOnce(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "berth.yaml"), []byte("apiVersion: berth.dev/v1\nkind: DeviceState\napps: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	repo := testenv.GitRepo(t, src)
	url := "oci://" + strings.TrimPrefix(srv.URL, "http://") + "/fleet/once:v1"
	cfg := "--docker-config=" + filepath.Join(t.TempDir(), "config.json")
	stdout, stderr, code := runBerth(t, "push", repo, url, cfg)
	if code != 0 || !strings.Contains(stdout, "sha256:") || stderr != "" {
		t.Errorf("push: exit %d, stdout %q, stderr %q (want the summary once, on stdout)", code, stdout, stderr)
	}
	if _, stderr, _ := runBerth(t, "push", repo, url, cfg, "--log-level", "info"); !strings.Contains(stderr, "level=INFO") {
		t.Errorf("push --log-level info logs nothing: %q", stderr)
	}
}
