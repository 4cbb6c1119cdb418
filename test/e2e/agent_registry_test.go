package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

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

// TestAgentThroughMirror runs the agent against an upstream registry it
// reaches through a counting proxy and a plant registry that mirrors it:
// the state artifact, its signatures and (with allowTags) its tags come
// from the plant registry, and the upstream registry sees no request at
// all from the device.
func TestAgentThroughMirror(t *testing.T) {
	a := newAgentEnv(t)
	up := testenv.StartProxy(t, a.reg)
	plant := testenv.StartRegistry(t, testenv.RegistryOptions{})
	v1 := a.publish("v1.0.0", a.key, 1)
	v2 := a.publish("v1.1.0", a.key, 2)
	mirrorCopy(t, a.reg, plant, "fleet/line-3", v1, "v1.0.0")
	mirrorCopy(t, a.reg, plant, "fleet/line-3", v2, "v1.1.0")

	// The device trusts both registries' CAs and holds both credentials.
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	writeConcat(t, ca, a.reg.CAFile, plant.CAFile)
	docker := filepath.Join(dir, "docker.json")
	writeDockerConfig(t, docker, map[string]*testenv.Registry{up.Host(): a.reg, plant.Host(): plant})
	mp := plant.Host() + "/fleet"

	for _, tc := range []struct {
		name, ref, registries, want string
		via                         map[string]string
	}{
		{
			name: "digest through a digest-only mirror", ref: "ref: {digest: " + v1 + "}", want: v1,
			registries: "    sourceFallback: false",
			via:        map[string]string{"manifest": mp, "signatures": mp, "layer": mp},
		},
		{
			name: "semver through a mirror trusted with tags", ref: `ref: {semver: ">=1.0.0"}`, want: v2,
			registries: "    allowTags: true\n    sourceFallback: false",
			via:        map[string]string{"tag": mp, "manifest": mp, "signatures": mp, "layer": mp},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a.stateDir = filepath.Join(t.TempDir(), "state")
			cfg := fmt.Sprintf(`stateDir: %s
sources:
  - name: line-3
    url: oci://%s/fleet/line-3
    %s
    timeout: 30s
    verify: {keys: [%s]}
    credentials: {dockerConfig: %s}
    caFile: %s
registries:
  - source: %s/fleet
    mirrors: [%s]
%s
`, a.stateDir, up.Host(), tc.ref, a.pub, docker, ca, up.Host(), mp, tc.registries)
			a.cfgPath = filepath.Join(t.TempDir(), "agent.yaml")
			if err := os.WriteFile(a.cfgPath, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			up.Reset()
			out, errOut, code := testenv.Run(t, a.bin, nil, "agent", "--config", a.cfgPath, "--once", "--output", "json", "--log-level", "info")
			var res []struct {
				Outcome, Digest, Error string
				Via                    map[string]string
			}
			if err := json.Unmarshal([]byte(out), &res); err != nil || len(res) != 1 || code != 0 {
				t.Fatalf("agent --once: exit %d, %q (%v)\nstderr: %s", code, out, err, errOut)
			}
			if r := res[0]; r.Outcome != "applied" || r.Digest != tc.want || !maps.Equal(r.Via, tc.via) {
				t.Fatalf("agent --once = %+v, want applied %s via %v", r, tc.want, tc.via)
			}
			if n := len(up.Requests()); n != 0 {
				t.Fatalf("the upstream registry received %d requests from the device, want 0: %+v", n, up.Requests())
			}
			if !strings.Contains(errOut, "via.manifest="+mp) {
				t.Errorf("the log does not say which mirror served the artifact:\n%s", errOut)
			}

			// berth status says it, in text and JSON.
			text := a.ok("status", "--config", a.cfgPath)
			if !strings.Contains(text, "via:      mirror "+mp+" (") {
				t.Errorf("status does not name the mirror:\n%s", text)
			}
			var st struct {
				Sources []struct {
					Applied struct {
						Mirror string
						Via    map[string]string
					}
				}
			}
			a.okJSON(&st, "status", "--config", a.cfgPath)
			if len(st.Sources) != 1 || st.Sources[0].Applied.Mirror != mp || !maps.Equal(st.Sources[0].Applied.Via, tc.via) {
				t.Errorf("status --output json = %+v", st)
			}
		})
	}
}

// mirrorCopy copies repo@digest and its signatures (referrers, through
// the sha256-<hex> fallback tag on this registry, and the legacy .sig tag)
// from one registry to another, keeping digests, and tags it there.
func mirrorCopy(t *testing.T, from, to *testenv.Registry, repo, digest string, tags ...string) {
	t.Helper()
	ctx := context.Background()
	open := func(r *testenv.Registry) *remote.Repository {
		repo, err := remote.NewRepository(r.Host() + "/" + repo)
		if err != nil {
			t.Fatal(err)
		}
		repo.Client = &auth.Client{
			Client:     r.HTTPClient(),
			Credential: auth.StaticCredential(r.Host(), auth.Credential{Username: r.Username, Password: r.Password}),
		}
		return repo
	}
	src, dst := open(from), open(to)
	desc, err := src.Resolve(ctx, digest)
	if err != nil {
		t.Fatal(err)
	}
	// Through memory: oras-go closes a registry response body used as an
	// upload body from two goroutines (a data race in its copy).
	mem := memory.New()
	if err := oras.ExtendedCopyGraph(ctx, src, mem, desc, oras.ExtendedCopyGraphOptions{}); err != nil {
		t.Fatalf("read %s@%s: %v", repo, digest, err)
	}
	if err := oras.ExtendedCopyGraph(ctx, mem, dst, desc, oras.ExtendedCopyGraphOptions{}); err != nil {
		t.Fatalf("copy %s@%s: %v", repo, digest, err)
	}
	for _, tag := range tags {
		if err := dst.Tag(ctx, desc, tag); err != nil {
			t.Fatal(err)
		}
	}
	sig := "sha256-" + strings.TrimPrefix(digest, "sha256:") + ".sig"
	if _, err := src.Resolve(ctx, sig); err == nil {
		if _, err := oras.Copy(ctx, src, sig, mem, sig, oras.CopyOptions{}); err != nil {
			t.Fatalf("read %s: %v", sig, err)
		}
		if _, err := oras.Copy(ctx, mem, sig, dst, sig, oras.CopyOptions{}); err != nil {
			t.Fatalf("copy %s: %v", sig, err)
		}
	}
}

// writeConcat writes the concatenation of files to path.
func writeConcat(t *testing.T, path string, files ...string) {
	t.Helper()
	var b []byte
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, data...)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeDockerConfig writes a Docker config.json holding, for each host, the
// credentials of its registry.
func writeDockerConfig(t *testing.T, path string, hosts map[string]*testenv.Registry) {
	t.Helper()
	auths := map[string]map[string]string{}
	for h, r := range hosts {
		auths[h] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(r.Username + ":" + r.Password))}
	}
	b, err := json.Marshal(map[string]any{"auths": auths})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
