package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestMargoKilledDuringApply kills the agent (SIGKILL) while it applies
// an update: the persisted state never claims the update, `current` names
// a complete revision, and the next start puts the previous revision back,
// then takes the update again and reports it.
func TestMargoKilledDuringApply(t *testing.T) {
	e := newEnv(t)
	d := newMargoDevice(t, e)
	d.writeConfig(d.wfm.URL)
	collector := e.url("acme/collector")
	e.ok("margo", "compose-archive", d.collector("1s"), collector+":1.0.0", "--sign-key", e.key)
	// 2.0.0 is healthy only after its first health check, 10s after start:
	// the agent is killed while it waits for it.
	e.ok("margo", "compose-archive", d.collector("10s"), collector+":2.0.0", "--sign-key", e.key)
	d.wfm.Publish(1, d.composeDeployment(depCompose, collector, "1.0.0", "v1"))
	d.expectOnce("applied", "")
	d.expectServing("v1")
	v1 := d.current()

	d.wfm.Publish(2, d.composeDeployment(depCompose, collector, "2.0.0", "v2"))
	p := testenv.StartProcess(t, testenv.RunOptions{}, d.bin, "agent", "--config", d.cfgPath, "--log-level", "debug")
	testenv.Eventually(t, 60*time.Second, func() bool { c := d.current(); return c != "" && c != v1 }, "the agent never switched the update in; log:\n%s", p.Stderr())
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.Wait(10 * time.Second)
	if strings.Contains(p.Stderr(), "Margo deployment status\" deployment="+depCompose+" state=installed") {
		t.Fatalf("the agent finished the apply before it was killed: the test must catch it during the apply\n%s", p.Stderr())
	}
	// What is persisted never claims more than what was reconciled.
	if a := d.accepted(); a.ManifestVersion != 1 || a.Revision != v1 {
		t.Fatalf("after SIGKILL the accepted state is %+v, want manifestVersion 1 on %s", a, v1)
	}
	// current names a complete revision: the old one or the new one.
	if _, err := os.Stat(filepath.Join(d.stateDir, "sources", "margo", "current", "margo-plan.json")); err != nil {
		t.Fatalf("current is not a complete revision: %v", err)
	}
	if got := d.serving(); got != "v1" && got != "v2" && got != "" {
		t.Fatalf("the app answers %q, neither revision", got)
	}

	// The next start: v1 is put back, then the update is taken again.
	r, code, log := d.once()
	if r.Outcome != "applied" || code != 0 || !strings.Contains(log, "putting back the revision in force before it") {
		t.Fatalf("after the restart: %+v exit %d\n%s", r, code, log)
	}
	d.expectServing("v2")
	if a := d.accepted(); a.ManifestVersion != 2 || a.Revision != d.current() || a.Deployments[depCompose].AdoptedManifestVersion != 2 {
		t.Errorf("accepted state = %+v, current %s", a, d.current())
	}
	if got := d.states(depCompose); !slices.Equal(got, []string{"installing", "installed", "installing", "installing", "installed"}) {
		t.Errorf("statuses = %v", got)
	}

	// A running agent shows its Margo source live in berth status.
	p = testenv.StartProcess(t, testenv.RunOptions{}, d.bin, "agent", "--config", d.cfgPath)
	testenv.Eventually(t, 30*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(d.stateDir, "berth.sock"))
		return err == nil
	}, "the agent socket never appeared:\n%s", p.Stderr())
	testenv.Eventually(t, 30*time.Second, func() bool {
		st, _ := d.status()
		return st.URL == d.wfm.URL && st.Detail.ManifestVersion == 2
	}, "status never showed the live Margo source")
	st, text := d.status()
	if len(st.Detail.Deployments) != 1 || st.Detail.Deployments[0].ID != depCompose || !strings.Contains(st.Ref, "manifestVersion 2") || !strings.Contains(text, "source margo  "+d.wfm.URL) {
		t.Errorf("live status = %+v\n%s", st, text)
	}
	p.Stop()
}

// TestMargoRelocatedComponents: a component signed upstream still verifies
// after berth mirror copied it to a site registry, and after a bundle
// carried it to another, the device pulling through its registry mirrors
// with upstream out of reach.
func TestMargoRelocatedComponents(t *testing.T) {
	e := newEnv(t)
	d := newMargoDevice(t, e)
	up := e.reg.Host()
	collector := e.url("acme/collector")
	e.ok("margo", "compose-archive", d.collector("1s"), collector+":1.0.0", "--sign-key", e.key)
	site, carried := testenv.StartRegistry(t, testenv.RegistryOptions{}), testenv.StartRegistry(t, testenv.RegistryOptions{})
	d.docker.TrustRegistry(t, site)
	dir := t.TempDir()
	d.caFile = filepath.Join(dir, "ca.pem")
	writeConcat(t, d.caFile, e.reg.CAFile, site.CAFile, carried.CAFile)
	dockerDir := filepath.Join(dir, "docker")
	d.dockerConfig = filepath.Join(dockerDir, "config.json")
	os.MkdirAll(dockerDir, 0o700)
	writeDockerConfig(t, d.dockerConfig, map[string]*testenv.Registry{up: e.reg, site.Host(): site, carried.Host(): carried})
	run := func(args ...string) string {
		t.Helper()
		out, errOut, code := testenv.Run(t, d.bin, []string{"DOCKER_CONFIG=" + dockerDir, "COSIGN_PASSWORD=" + password}, append(args, "--ca-file", d.caFile)...)
		if code != 0 {
			t.Fatalf("berth %v: exit %d\n%s\n%s", args, code, out, errOut)
		}
		return out
	}
	// berth mirror copies the component and the image, signatures
	// included, to the site registry; a bundle carries the component and
	// its signature to another.
	cfg := filepath.Join(dir, "mirror.yaml")
	mkWrite(t, cfg, fmt.Sprintf("jobs:\n  - name: site\n    source: %s\n    repositories: [acme/collector, acme/hello]\n    targets: [%s]\n    filter: {pattern: '.*'}\n", up, site.Host()))
	run("mirror", "--config", cfg, "--once")
	bundle := filepath.Join(dir, "collector.tar")
	run("bundle", "create", collector+":1.0.0", "-o", bundle, "--key", e.pub)
	run("bundle", "push", bundle, carried.Host())
	e.reg.Stop() // upstream is out of reach from here on

	d.wfm.Publish(1, d.composeDeployment(depCompose, collector, "1.0.0", "relocated"))
	for _, tc := range []struct {
		name string
		from *testenv.Registry // where the component comes from
	}{{"berth mirror", site}, {"bundle", carried}} {
		t.Run(tc.name, func(t *testing.T) {
			d.stateDir = filepath.Join(t.TempDir(), "state")
			d.registries = fmt.Sprintf(`registries:
  - source: %[1]s/acme/collector
    mirrors: [%[2]s/acme/collector]
    allowTags: true
    sourceFallback: false
  - source: %[1]s/acme/hello
    mirrors: [%[3]s/acme/hello]
    sourceFallback: false
`, up, tc.from.Host(), site.Host())
			d.writeConfig(d.wfm.URL)
			sigs := tc.from.RequestCount("/v2/acme/collector/manifests/sha256-")
			manifests := tc.from.RequestCount("/v2/acme/collector/manifests/")
			r, code, log := d.once()
			if r.Outcome != "applied" || code != 0 {
				t.Fatalf("agent --once = %+v (exit %d)\nlog:\n%s", r, code, log)
			}
			if s := d.lastStatus(depCompose); s.State != "installed" {
				t.Fatalf("status = %+v\nagent log:\n%s", s, log)
			}
			d.expectServing("relocated")
			if tc.from.RequestCount("/v2/acme/collector/manifests/sha256-") == sigs || tc.from.RequestCount("/v2/acme/collector/manifests/") == manifests {
				t.Errorf("%s did not serve the component and its signature:\n%s", tc.from.Host(), log)
			}
			if a := d.accepted(); a.ManifestVersion != 1 || len(a.Deployments) != 1 {
				t.Errorf("accepted state = %+v", a)
			}
		})
	}
}
