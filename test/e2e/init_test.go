package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestInitPushAgent: the newcomer's path from nothing. berth init writes a
// repository for a plain-HTTP registry on loopback; committed, it pushes
// and signs as written, and a device with the agent.yaml init wrote
// applies it on a real Docker Engine. A second init refuses to overwrite.
func TestInitPushAgent(t *testing.T) {
	bin := testenv.BuildBerth(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{Plain: true, NoAuth: true})
	docker := testenv.Docker(t)
	image := reg.Host() + "/acme/hello:1.0.0"
	testenv.PushImage(t, reg, image, testenv.BuildHello(t), testenv.ImageOptions{})
	t.Cleanup(func() { docker.RemoveProjectResources(t, "berth-first-") })
	docker.RemoveProjectResources(t, "berth-first-")

	work := t.TempDir()
	env := []string{"COSIGN_PASSWORD=" + password, "DOCKER_CONFIG=" + filepath.Join(work, "docker"), "DOCKER_HOST=" + docker.Host()}
	run := func(args ...string) (string, string, int) { return testenv.Run(t, bin, env, args...) }
	ok := func(args ...string) string {
		t.Helper()
		out, errOut, code := run(args...)
		if code != 0 {
			t.Fatalf("berth %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}

	dir := filepath.Join(work, "fleet")
	repoURL := "oci://" + reg.Host() + "/fleet/first"
	out := ok("init", dir, "--repository", repoURL, "--image", image, "--app", "hello", "--plain-http")
	if !strings.Contains(out, "wrote device/agent.yaml") {
		t.Errorf("init printed %q", out)
	}
	if _, errOut, code := run("init", dir); code == 0 || !strings.Contains(errOut, "berth.yaml") || !strings.Contains(errOut, "files exist") {
		t.Errorf("second init: exit %d, %q", code, errOut)
	}

	// The publisher's key; the device's copy of the public key goes where
	// agent.yaml looks for it.
	ok("generate-key", "--prefix", filepath.Join(work, "cosign"))
	pub, err := os.ReadFile(filepath.Join(work, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "device", "cosign.pub"), pub, 0o644); err != nil {
		t.Fatal(err)
	}
	repo := testenv.GitRepo(t, dir)
	var pushed pushResult
	if err := json.Unmarshal([]byte(ok("push", repo, repoURL+":1.0.0", "--sign-key", filepath.Join(work, "cosign.key"), "--insecure", "--output", "json")), &pushed); err != nil || pushed.Digest == "" {
		t.Fatalf("push: %v %+v", err, pushed)
	}

	// The device: agent.yaml as init wrote it, with a state folder of the
	// test's own.
	cfg := filepath.Join(repo, "device", "agent.yaml")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, append([]byte("stateDir: "+filepath.Join(work, "state")+"\n"), b...), 0o600); err != nil {
		t.Fatal(err)
	}
	ok("agent", "--config", cfg, "--check-config")
	stdout, errOut, code := run("agent", "--config", cfg, "--once", "--output", "json")
	var res []result
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || code != 0 || len(res) != 1 || res[0].Outcome != "applied" || res[0].Digest != pushed.Digest {
		t.Fatalf("agent --once: exit %d, %v, %q\n%s", code, err, stdout, errOut)
	}
	cs := docker.Containers(t, map[string]string{"dev.berth.source": "first"})
	if len(cs) != 1 || cs[0].State != "running" || !strings.HasPrefix(cs[0].Image, reg.Host()+"/acme/hello") {
		t.Errorf("containers of the app: %+v", cs)
	}
}
