package testenv

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// The fleet the rollout tests and benchmarks publish to, and the source
// name its agents track it under.
const (
	FleetRepository = "fleet/line-3"
	FleetSource     = "line-3"
	// FleetKeyPassword protects the fleet's cosign key (COSIGN_PASSWORD).
	FleetKeyPassword = "fleet-key-password"
)

// Fleet is what the fleet tests share: the real registry, the berth binary,
// a cosign key pair made by berth generate-key, and a Git repository of
// examples/compose-hello whose one Compose app names an image pushed to the
// registry. Push publishes it to FleetRepository; AgentConfig writes an
// agent.yaml that tracks it.
type Fleet struct {
	Registry *Registry
	// Bin is the berth binary (berth-agent next to it).
	Bin string
	// Key and Pub are the cosign private and public key files.
	Key, Pub string
	// Repo is the Git repository Push publishes.
	Repo string
	// Dir is a temporary folder of the fleet (agents' folders go in it).
	Dir string

	tb   testing.TB
	base []byte // berth.yaml as the example has it
}

// StartFleet starts a registry, builds berth, generates a signing key and
// makes the fleet's Git repository.
func StartFleet(tb testing.TB) *Fleet {
	tb.Helper()
	f := &Fleet{tb: tb, Registry: StartRegistry(tb, RegistryOptions{}), Bin: BuildBerth(tb), Dir: tb.TempDir()}
	prefix := filepath.Join(f.Dir, "cosign")
	f.OK("generate-key", "--prefix", prefix)
	f.Key, f.Pub = prefix+".key", prefix+".pub"

	image := f.Registry.Host() + "/acme/hello:1.0.0"
	img, err := random.Image(512, 1)
	if err != nil {
		tb.Fatal(err)
	}
	ref, err := name.ParseReference(image)
	if err != nil {
		tb.Fatal(err)
	}
	auth := &authn.Basic{Username: f.Registry.Username, Password: f.Registry.Password}
	if err := remote.Write(ref, img, remote.WithAuth(auth), remote.WithTransport(f.Registry.HTTPClient().Transport)); err != nil {
		tb.Fatalf("testenv: push %s: %v", image, err)
	}

	src := filepath.Join(f.Dir, "fleet")
	if err := CopyDir(filepath.Join(ModuleRoot(tb), "examples", "compose-hello"), src); err != nil {
		tb.Fatal(err)
	}
	compose := filepath.Join(src, "apps", "web", "compose.yaml")
	b, err := os.ReadFile(compose)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(compose, []byte(strings.ReplaceAll(string(b), "127.0.0.1:5000/acme/hello:1.0.0", image)), 0o644); err != nil {
		tb.Fatal(err)
	}
	f.Repo = GitRepo(tb, src)
	if f.base, err = os.ReadFile(filepath.Join(f.Repo, "berth.yaml")); err != nil {
		tb.Fatal(err)
	}
	return f
}

// Berth runs the berth binary with the registry's credentials and CA and
// the key's password.
func (f *Fleet) Berth(args ...string) (stdout, stderr string, code int) {
	f.tb.Helper()
	return Run(f.tb, f.Bin, f.Env(), args...)
}

// Env is the environment Berth runs berth with, for StartProcess.
func (f *Fleet) Env() []string {
	return []string{"DOCKER_CONFIG=" + f.Registry.DockerConfigDir, "COSIGN_PASSWORD=" + FleetKeyPassword, "SSL_CERT_FILE=" + f.Registry.CAFile}
}

// OK runs berth (see Berth) and fails the test unless it exits 0.
func (f *Fleet) OK(args ...string) string {
	f.tb.Helper()
	out, errOut, code := f.Berth(args...)
	if code != 0 {
		f.tb.Fatalf("berth %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// URL is oci://HOST/FleetRepository:tag.
func (f *Fleet) URL(tag string) string {
	return "oci://" + f.Registry.Host() + "/" + FleetRepository + ":" + tag
}

// Push commits the repository at created with berth.yaml as the example
// has it followed by extra (more apps, a rollout: plan), and pushes it
// to FleetRepository:tag signed with the fleet's key. It returns the
// release's digest.
func (f *Fleet) Push(tag string, created time.Time, extra string) string {
	f.tb.Helper()
	if err := os.WriteFile(filepath.Join(f.Repo, "berth.yaml"), append(slices.Clone(f.base), extra...), 0o644); err != nil {
		f.tb.Fatal(err)
	}
	GitCommitAll(f.tb, f.Repo, GitOptions{Time: created, Message: tag + " at " + created.Format(time.RFC3339)})
	out := f.OK("push", f.Repo, f.URL(tag), "--sign-key", f.Key, "--output", "json")
	var res struct{ Digest string }
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Digest == "" {
		f.tb.Fatalf("berth push printed no digest: %v\n%s", err, out)
	}
	return res.Digest
}

// Layers returns the paths of the blobs of the layers of the release
// digest in the registry's access log (/v2/<repository>/blobs/<digest>):
// the downloads of its payload.
func (f *Fleet) Layers(digest string) []string {
	f.tb.Helper()
	ref, err := name.NewDigest(f.Registry.Host() + "/" + FleetRepository + "@" + digest)
	if err != nil {
		f.tb.Fatal(err)
	}
	auth := &authn.Basic{Username: f.Registry.Username, Password: f.Registry.Password}
	img, err := remote.Image(ref, remote.WithAuth(auth), remote.WithTransport(f.Registry.HTTPClient().Transport))
	if err != nil {
		f.tb.Fatalf("testenv: read %s: %v", ref, err)
	}
	m, err := img.Manifest()
	if err != nil {
		f.tb.Fatalf("testenv: read %s: %v", ref, err)
	}
	var out []string
	for _, l := range m.Layers {
		out = append(out, "/v2/"+FleetRepository+"/blobs/"+l.Digest.String())
	}
	return out
}

// FleetAgent is one device of a fleet, for AgentConfig.
type FleetAgent struct {
	// ID and Labels are the device's identity.
	ID     string
	Labels map[string]string
	// Ref is the source's ref block; default {tag: stable}.
	Ref string
	// Interval and Timeout of the source; default 3s and 20s.
	Interval, Timeout time.Duration
	// Jitter of the source ("0", "10%"); default the agent's.
	Jitter string
	// LogLevel of the agent; default the agent's.
	LogLevel string
	// Extra is YAML appended at the top level (apply:, report:, ...).
	Extra string
}

// AgentConfig writes dir/agent.yaml for a: one source, FleetSource,
// tracking FleetRepository with the fleet's key, credentials and CA, state
// in dir/state. It returns the file and the state folder.
func (f *Fleet) AgentConfig(dir string, a FleetAgent) (path, stateDir string) {
	f.tb.Helper()
	if a.Ref == "" {
		a.Ref = "{tag: stable}"
	}
	if a.Interval == 0 {
		a.Interval = 3 * time.Second
	}
	if a.Timeout == 0 {
		a.Timeout = 20 * time.Second
	}
	keys := make([]string, 0, len(a.Labels))
	for k := range a.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	labels := make([]string, len(keys))
	for i, k := range keys {
		labels[i] = fmt.Sprintf("%q: %q", k, a.Labels[k])
	}
	stateDir = filepath.Join(dir, "state")
	var b strings.Builder
	fmt.Fprintf(&b, "stateDir: %s\ndevice: {id: %s, labels: {%s}}\n", stateDir, a.ID, strings.Join(labels, ", "))
	if a.LogLevel != "" {
		fmt.Fprintf(&b, "log: {level: %s}\n", a.LogLevel)
	}
	fmt.Fprintf(&b, `sources:
  - name: %s
    url: oci://%s/%s
    ref: %s
    interval: %s
    timeout: %s
`, FleetSource, f.Registry.Host(), FleetRepository, a.Ref, a.Interval, a.Timeout)
	if a.Jitter != "" {
		fmt.Fprintf(&b, "    jitter: %s\n", a.Jitter)
	}
	fmt.Fprintf(&b, "    verify: {keys: [%s]}\n    credentials: {dockerConfig: %s}\n    caFile: %s\n", f.Pub, f.Registry.DockerConfig, f.Registry.CAFile)
	b.WriteString(a.Extra)
	path = filepath.Join(dir, "agent.yaml")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		f.tb.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		f.tb.Fatal(err)
	}
	return path, stateDir
}

// StartAgent runs berth agent --config path until the test ends.
func (f *Fleet) StartAgent(path string) *Process {
	f.tb.Helper()
	return StartProcess(f.tb, RunOptions{}, f.Bin, "agent", "--config", path)
}

// FleetCurrent is the digest an agent with state in stateDir has switched
// in for FleetSource (its `current` link), "" when none.
func FleetCurrent(stateDir string) string {
	target, err := os.Readlink(filepath.Join(stateDir, "sources", FleetSource, "current"))
	if err != nil {
		return ""
	}
	return strings.Replace(filepath.Base(target), "sha256-", "sha256:", 1)
}

// FleetBucket is a device's bucket in a repository by the documented
// formula (the first 8 bytes of SHA-256(repository "\n" id), big-endian,
// modulo 10000), computed without the code under test.
func FleetBucket(repo, id string) int {
	sum := sha256.Sum256([]byte(repo + "\n" + id))
	return int(binary.BigEndian.Uint64(sum[:8]) % 10000)
}
