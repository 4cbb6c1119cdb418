package e2e

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

// agentEnv is a registry, a publisher and one device state folder.
type agentEnv struct {
	*env
	repo     string // the Git repository the publisher pushes
	stateDir string
	cfgPath  string
	commits  int
	interval string // the source's interval; default 2s
}

func newAgentEnv(t *testing.T) *agentEnv {
	t.Helper()
	e := newEnv(t)
	e.pushImage("acme/hello:1.0.0")
	return &agentEnv{env: e, repo: e.fleet(e.reg.Host() + "/acme/hello:1.0.0"), stateDir: filepath.Join(t.TempDir(), "state")}
}

// publish commits a change and pushes it to repo:tag, signed unless key is
// "", with the commit time at offset minutes after the default time (the
// created annotation the anti-downgrade check reads).
func (a *agentEnv) publish(tag, key string, offset int) string {
	a.t.Helper()
	a.commits++
	if err := os.WriteFile(filepath.Join(a.repo, "VERSION"), []byte(fmt.Sprintf("%s %d\n", tag, a.commits)), 0o644); err != nil {
		a.t.Fatal(err)
	}
	testenv.GitCommitAll(a.t, a.repo, testenv.GitOptions{Time: testenv.DefaultGitTime.Add(time.Duration(offset) * time.Minute), Message: tag})
	args := []string{"push", a.repo, a.url("fleet/line-3:" + tag)}
	if key != "" {
		args = append(args, "--sign-key", key)
	}
	var res pushResult
	a.okJSON(&res, args...)
	return res.Digest
}

// writeConfig writes the agent configuration with one source named
// line-3 whose ref/filter block is refYAML.
func (a *agentEnv) writeConfig(refYAML string, extra ...string) {
	a.t.Helper()
	cfg := fmt.Sprintf(`stateDir: %s
sources:
  - name: line-3
    url: oci://%s/fleet/line-3
%s
    interval: %s
    timeout: 20s
    jitter: 0
    verify: {keys: [%s]}
    credentials: {dockerConfig: %s}
    caFile: %s
%s`, a.stateDir, a.reg.Host(), indent(refYAML, "    "), cmp.Or(a.interval, "2s"), a.pub, a.reg.DockerConfig, a.reg.CAFile, strings.Join(extra, "\n"))
	a.cfgPath = filepath.Join(filepath.Dir(a.stateDir), "agent.yaml")
	if err := os.WriteFile(a.cfgPath, []byte(cfg), 0o600); err != nil {
		a.t.Fatal(err)
	}
}

func indent(s, pre string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = pre + l
	}
	return strings.Join(lines, "\n")
}

type result struct {
	Source, Outcome, Digest, Error string
}

// once runs `berth agent --once` and returns its single result and exit
// code.
func (a *agentEnv) once() (result, int) {
	a.t.Helper()
	out, errOut, code := testenv.Run(a.t, a.bin, nil, "agent", "--config", a.cfgPath, "--once", "--output", "json")
	var res []result
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res) != 1 {
		a.t.Fatalf("agent --once: exit %d, stdout %q, stderr %s", code, out, errOut)
	}
	return res[0], code
}

// current returns the digest the source's current revision holds.
func (a *agentEnv) current() string {
	a.t.Helper()
	target, err := os.Readlink(filepath.Join(a.stateDir, "sources", "line-3", "current"))
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		a.t.Fatal(err)
	}
	return strings.Replace(filepath.Base(target), "sha256-", "sha256:", 1)
}

// appliedVersion reads the VERSION file of the current revision.
func (a *agentEnv) appliedVersion() string {
	b, _ := os.ReadFile(filepath.Join(a.stateDir, "sources", "line-3", "current", "VERSION"))
	return strings.TrimSpace(string(b))
}

func (a *agentEnv) expectApplied(want string) {
	a.t.Helper()
	res, code := a.once()
	if code != 0 || res.Outcome != "applied" || res.Digest != want {
		a.t.Fatalf("agent --once = %+v (exit %d), want applied %s", res, code, want)
	}
	if got := a.current(); got != want {
		a.t.Fatalf("current = %s, want %s", got, want)
	}
}

func (a *agentEnv) expectRefused(current, substr string) {
	a.t.Helper()
	res, code := a.once()
	if code == 0 || res.Outcome != "refused" || !strings.Contains(res.Error, substr) {
		a.t.Fatalf("agent --once = %+v (exit %d), want refused with %q", res, code, substr)
	}
	if got := a.current(); got != current {
		a.t.Fatalf("current = %s after a refusal, want it unchanged at %s", got, current)
	}
}

func TestAgentRefs(t *testing.T) {
	a := newAgentEnv(t)
	d100 := a.publish("v1.0.0", a.key, 1)
	d140 := a.publish("v1.4.0", a.key, 2)
	d150rc := a.publish("v1.5.0-rc.1", a.key, 3)
	d200 := a.publish("v2.0.0", a.key, 4)
	a.publish("main-aaaaaaa-1700000100", a.key, 5)
	dts2 := a.publish("main-bbbbbbb-1700000200", a.key, 6)
	d900 := a.publish("main-ccccccc-900", a.key, 7) // numerically oldest, alphabetically newest

	for _, tc := range []struct {
		name, ref, want string
	}{
		{"tag", "ref: {tag: v1.4.0}", d140},
		{"digest", "ref: {digest: " + d100 + "}", d100},
		{"semver range", `ref: {semver: ">=1.0.0 <2.0.0"}`, d140},
		{"semver with pre-releases", `ref: {semver: ">=1.0.0-0 <2.0.0"}`, d150rc},
		{"semver filter", `ref: {semver: ">=1.0.0", semverFilter: "^v1\\."}`, d140},
		{"semver all", `ref: {semver: ">=1.0.0"}`, d200},
		{"filter numerical", `filter: {pattern: '^main-[a-f0-9]+-(?P<ts>[0-9]+)$', extract: '$ts', order: numerical}`, dts2},
		{"filter numerical desc", `filter: {pattern: '^main-[a-f0-9]+-(?P<ts>[0-9]+)$', extract: '$ts', order: numerical, direction: desc}`, d900},
		{"filter alphabetical", `filter: {pattern: '^main-(?P<sha>[a-f0-9]+)-', extract: '$sha', order: alphabetical}`, d900},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a.stateDir = filepath.Join(t.TempDir(), "state")
			a.writeConfig(tc.ref)
			a.expectApplied(tc.want)
		})
	}
}

// TestAgentRefusals: every bad artifact is refused with a clear error and
// the applied revision stays in place.
func TestAgentRefusals(t *testing.T) {
	a := newAgentEnv(t)
	good := a.publish("stable", a.key, 10)
	a.writeConfig("ref: {tag: stable}")
	a.expectApplied(good)
	version := a.appliedVersion()

	// Unsigned.
	a.publish("stable", "", 11)
	a.expectRefused(good, "no signature found")

	// Signed with a key the device does not trust.
	otherKey, _ := a.keyPair("other")
	a.publish("stable", otherKey, 12)
	a.expectRefused(good, "no signature verifies")

	// A signature copied from the good digest onto a new artifact.
	bad := a.publish("stable", "", 13)
	hexGood, hexBad := strings.TrimPrefix(good, "sha256:"), strings.TrimPrefix(bad, "sha256:")
	a.ok("tag", a.url("fleet/line-3:sha256-"+hexGood), "sha256-"+hexBad)
	a.expectRefused(good, "signature names a different digest")

	// Downgrade: a correctly signed artifact created before the applied one.
	a.publish("stable", a.key, 5)
	a.expectRefused(good, "downgrade refused")

	// Tampered blob: signed, but its layer bytes were altered in storage.
	tampered := a.publish("stable", a.key, 20)
	corruptLayers(t, a.reg.StorageDir)
	a.expectRefused(good, "digest mismatch")
	if a.appliedVersion() != version {
		t.Fatalf("applied content changed to %q", a.appliedVersion())
	}
	if entries, _ := filepath.Glob(filepath.Join(a.stateDir, "revisions", "*"+strings.TrimPrefix(tampered, "sha256:")+"*")); len(entries) != 0 {
		t.Fatalf("a refused revision was left in the store: %v", entries)
	}

	// The history tells what happened.
	var hist []struct{ Outcome, Digest, Error string }
	out, _, _ := testenv.Run(t, a.bin, nil, "history", "line-3", "--config", a.cfgPath, "--output", "json")
	if err := json.Unmarshal([]byte(out), &hist); err != nil || len(hist) < 6 || hist[0].Outcome != "refused" || hist[len(hist)-1].Outcome != "applied" {
		t.Fatalf("history = %+v (%v)", hist, err)
	}
}

// corruptLayers flips a byte in every gzip blob the registry stores that
// the device has not pulled yet (all of them: the device never shares its
// store with the registry).
func corruptLayers(t *testing.T, storage string) {
	t.Helper()
	blobs, _ := filepath.Glob(filepath.Join(storage, "docker/registry/v2/blobs/sha256/*/*/data"))
	n := 0
	for _, p := range blobs {
		b, err := os.ReadFile(p)
		if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
			continue
		}
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no gzip blob to corrupt")
	}
}
