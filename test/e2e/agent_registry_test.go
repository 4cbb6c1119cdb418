package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestAgentThroughProxy puts a counting proxy between the device and the
// registry: an unchanged poll costs exactly one request, and a semver range
// resolves correctly across 10,000 tags served in pages.
func TestAgentThroughProxy(t *testing.T) {
	a := newAgentEnv(t)
	proxy := testenv.StartProxy(t, a.reg)
	d := a.publish("v1.2.3", a.key, 1)
	target := a.publish("v1.9.7", a.key, 2)

	// 10,000 more tags, all older versions or outside the range.
	var tags []string
	for i := range 10000 {
		switch {
		case i%3 == 0:
			tags = append(tags, fmt.Sprintf("v1.%d.%d-rc.%d", 9+i%9, i%100, i)) // pre-releases, even above the target: excluded
		case i%3 == 1:
			tags = append(tags, fmt.Sprintf("v0.%d.%d", i/100, i%100))
		default:
			tags = append(tags, fmt.Sprintf("build-%05d", i))
		}
	}
	testenv.SeedTags(t, a.reg, "fleet/line-3", d, tags)
	proxy.PaginateTags(100)

	cfgDocker := a.reg.DockerConfigFor(t, proxy.Host())
	a.stateDir = filepath.Join(t.TempDir(), "state")
	cfg := fmt.Sprintf(`stateDir: %s
sources:
  - name: line-3
    url: oci://%s/fleet/line-3
    ref: {semver: ">=1.0.0 <2.0.0"}
    interval: 1h
    timeout: 30s
    verify: {keys: [%s]}
    credentials: {dockerConfig: %s/config.json}
    caFile: %s
`, a.stateDir, proxy.Host(), a.pub, cfgDocker, a.reg.CAFile)
	a.cfgPath = filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(a.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := a.startAgent()
	a.waitApplied(target)
	if pages := proxy.Count("GET", "/v2/fleet/line-3/tags/list"); pages < 100 {
		t.Errorf("the tag list was read in %d pages, want >= 100 (10,002 tags, 100 a page)", pages)
	}

	// Steady state with a tag: exactly one request per unchanged poll.
	p.Stop()
	cfg = strings.Replace(cfg, `ref: {semver: ">=1.0.0 <2.0.0"}`, `ref: {tag: v1.9.7}`, 1)
	if err := os.WriteFile(a.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	a.startAgent()
	a.ok("reconcile", "--now", "--config", a.cfgPath) // warm: auth scheme learned
	proxy.Reset()
	out := a.ok("reconcile", "--now", "--config", a.cfgPath, "--output", "json")
	if !strings.Contains(out, `"unchanged"`) {
		t.Fatalf("reconcile = %s, want unchanged", out)
	}
	if reqs := proxy.Requests(); len(reqs) != 1 || reqs[0].Method != "HEAD" {
		t.Fatalf("an unchanged poll made %d requests, want exactly 1 HEAD: %+v", len(reqs), reqs)
	}
}

// TestAgentKilledDuringExtraction kills the agent with SIGKILL while it
// extracts a large revision: after a restart, current is the old revision
// or the new one and the store holds no half revision.
func TestAgentKilledDuringExtraction(t *testing.T) {
	a := newAgentEnv(t)
	old := a.publish("stable", a.key, 1)
	a.writeConfig("ref: {tag: stable}")
	a.expectApplied(old)

	// A large revision: 160 MiB of incompressible files.
	big := filepath.Join(a.repo, "big")
	if err := os.MkdirAll(big, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		if err := writeRandom(filepath.Join(big, fmt.Sprintf("blob-%02d", i)), 4<<20); err != nil {
			t.Fatal(err)
		}
	}
	next := a.publish("stable", a.key, 2)

	p := a.startAgent()
	revisions := filepath.Join(a.stateDir, "revisions")
	testenv.Eventually(t, 60*time.Second, func() bool {
		tmp, _ := filepath.Glob(filepath.Join(revisions, "*.tmp*"))
		for _, d := range tmp {
			files, _ := filepath.Glob(filepath.Join(d, "big", "blob-*"))
			if len(files) >= 3 {
				return true
			}
		}
		return false
	}, "never caught the extraction in progress")
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.Wait(10 * time.Second)
	if cur := a.current(); cur != old && cur != next {
		t.Fatalf("after SIGKILL current = %q, want old %s or new %s", cur, old, next)
	}

	// Restart: the partial extraction is cleaned up and the new revision
	// applied.
	a.expectApplied(next)
	entries, _ := os.ReadDir(revisions)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("half revision left in the store: %s", e.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(a.stateDir, "sources", "line-3", "current", "big", "blob-39")); err != nil {
		t.Errorf("the new revision is incomplete: %v", err)
	}
}

func writeRandom(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := os.Open("/dev/urandom")
	if err != nil {
		return err
	}
	defer r.Close()
	buf := make([]byte, 1<<20)
	for n > 0 {
		k, err := r.Read(buf[:min(int64(len(buf)), n)])
		if err != nil {
			return err
		}
		if _, err := f.Write(buf[:k]); err != nil {
			return err
		}
		n -= int64(k)
	}
	return nil
}

// TestAgentKeyless verifies artifacts signed through a virtual Sigstore,
// fully offline against its trusted_root.json, and refuses other signers.
func TestAgentKeyless(t *testing.T) {
	a := newAgentEnv(t)
	d := a.publish("stable", "", 1)
	root := filepath.Join(t.TempDir(), "trusted_root.json")
	const (
		issuer  = "https://token.actions.githubusercontent.com"
		subject = "https://github.com/acme/fleet/.github/workflows/push.yml@refs/heads/main"
	)
	cmd := []string{"run", "./test/tools/keylesssign", "-ref", a.reg.Host() + "/fleet/line-3@" + d,
		"-identity", subject, "-issuer", issuer, "-trusted-root-out", root, "-ca-file", a.reg.CAFile}
	if out, errOut, code := testenv.RunWith(t, testenv.RunOptions{Dir: testenv.ModuleRoot(t), Env: []string{"DOCKER_CONFIG=" + a.reg.DockerConfigDir}, Timeout: 5 * time.Minute}, "go", cmd...); code != 0 {
		t.Fatalf("keylesssign: %s %s", out, errOut)
	}

	keyless := func(iss, sub string) {
		a.stateDir = filepath.Join(t.TempDir(), "state")
		cfg := fmt.Sprintf(`stateDir: %s
sources:
  - name: line-3
    url: oci://%s/fleet/line-3
    ref: {tag: stable}
    verify:
      keyless:
        trustedRoot: %s
        identities: [{issuer: %q, subject: %q}]
    credentials: {dockerConfig: %s}
    caFile: %s
`, a.stateDir, a.reg.Host(), root, iss, sub, a.reg.DockerConfig, a.reg.CAFile)
		a.cfgPath = filepath.Join(t.TempDir(), "agent.yaml")
		if err := os.WriteFile(a.cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	keyless(`^https://token\.actions\.githubusercontent\.com$`, `^https://github\.com/acme/fleet/`)
	a.expectApplied(d)
	keyless(`^https://accounts\.google\.com$`, `^https://github\.com/acme/fleet/`)
	a.expectRefused("", "not allowed")
	keyless(`^https://token\.actions\.githubusercontent\.com$`, `^https://github\.com/evil/`)
	a.expectRefused("", "not allowed")
}
