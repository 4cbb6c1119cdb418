package bundle

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestCommands runs berth bundle create, inspect, verify and push as a
// user would.
func TestCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("builds berth")
	}
	berth := testenv.BuildBerth(t)
	f := newFixture(t, startRegistry(t, true), newClient(t))
	plant := startRegistry(t, false)
	dir := t.TempDir()
	pub := filepath.Join(dir, "cosign.pub")
	if err := os.WriteFile(pub, f.key.pubPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other.pub")
	os.WriteFile(other, newTestKey(t).pubPEM, 0o644)
	env := []string{"DOCKER_CONFIG=" + dir}
	// run returns stdout, and stderr too unless --output json.
	run := func(wantCode int, args ...string) string {
		t.Helper()
		stdout, stderr, code := testenv.Run(t, berth, env, append(args, "--insecure")...)
		if code != wantCode {
			t.Fatalf("berth %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, wantCode, stdout, stderr)
		}
		if strings.Contains(strings.Join(args, " "), "--output json") {
			return stdout
		}
		return stdout + stderr
	}
	site := filepath.Join(dir, "site.tar")
	stateURL := "oci://" + f.state.Repo() + ":v1"

	if out := run(1, "bundle", "create", stateURL, "-o", site); !strings.Contains(out, "--key") {
		t.Errorf("create without a key: %s", out)
	}
	if out := run(1, "bundle", "create", stateURL, "-o", site, "--key", other); !strings.Contains(out, "no signature verifies") {
		t.Errorf("create with the wrong key: %s", out)
	}
	if _, err := os.Stat(site); !os.IsNotExist(err) {
		t.Errorf("a refused create left %s", site)
	}

	var created struct {
		Root   string `json:"root"`
		Digest string `json:"digest"`
		Items  []Item `json:"items"`
	}
	if err := json.Unmarshal([]byte(run(0, "bundle", "create", stateURL, "-o", site, "--key", pub, "--output", "json")), &created); err != nil {
		t.Fatal(err)
	}
	if created.Root != f.state.Repo()+":v1" || created.Digest != f.stateDig.String() || len(created.Items) != 6 {
		t.Errorf("create = %+v", created)
	}

	out := run(0, "bundle", "inspect", site)
	for _, want := range []string{"root       " + f.state.Repo() + ":v1@" + f.stateDig.String(), "state", "signature", "chart", f.chart + ":0.1.0_build.1", "linux/amd64, linux/arm64", "6 item(s) from 4 repositories"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect does not say %q:\n%s", want, out)
		}
	}
	var inspected struct {
		Items []Item `json:"items"`
	}
	if err := json.Unmarshal([]byte(run(0, "bundle", "inspect", site, "--output", "json")), &inspected); err != nil || len(inspected.Items) != 6 || inspected.Items[0].Role != RoleState {
		t.Errorf("inspect --output json: %+v, %v", inspected, err)
	}

	var verified struct {
		Blobs    bool   `json:"blobsVerified"`
		Verified bool   `json:"verified"`
		Format   string `json:"format"`
	}
	if err := json.Unmarshal([]byte(run(0, "bundle", "verify", site, "--key", pub, "--output", "json")), &verified); err != nil || !verified.Blobs || !verified.Verified {
		t.Errorf("verify: %+v, %v", verified, err)
	}
	if out := run(1, "bundle", "verify", site, "--key", other); !strings.Contains(out, "no signature verifies") {
		t.Errorf("verify with another key: %s", out)
	}

	var pushed struct {
		Root  string `json:"root"`
		Blobs Counts `json:"blobs"`
		Tags  Counts `json:"tags"`
	}
	if err := json.Unmarshal([]byte(run(0, "bundle", "push", site, plant+"/site", "--output", "json")), &pushed); err != nil ||
		pushed.Root != plant+"/site/fleet/line-3@"+f.stateDig.String() || pushed.Tags.Pushed != 5 {
		t.Errorf("push: %+v, %v", pushed, err)
	}
	if out := run(0, "bundle", "push", site, plant+"/site"); !strings.Contains(out, "blobs 0 pushed (0 B)") || !strings.Contains(out, "tags 0 pushed, 5 skipped") {
		t.Errorf("second push: %s", out)
	}
	// The pushed state verifies with berth verify.
	run(0, "verify", "oci://"+plant+"/site/fleet/line-3:v1", "--key", pub)

	testenv.AlterBundleBlob(t, site, f.shared.String())
	if out := run(1, "bundle", "verify", site, "--key", pub); !strings.Contains(out, "digest mismatch") || !strings.Contains(out, f.shared.String()) {
		t.Errorf("verify of an altered bundle: %s", out)
	}
}
