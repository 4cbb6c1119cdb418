package e2e

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/testenv"
)

const password = "e2e-key-password"

// env is one registry, the berth binary and a signing key pair.
type env struct {
	t   *testing.T
	bin string
	reg *testenv.Registry
	dir string
	key string // private key file
	pub string // public key file
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, bin: testenv.BuildBerth(t), reg: testenv.StartRegistry(t, testenv.RegistryOptions{}), dir: t.TempDir()}
	e.key, e.pub = e.keyPair("cosign")
	return e
}

// keyPair writes a cosign key pair with berth generate-key.
func (e *env) keyPair(prefix string) (string, string) {
	e.t.Helper()
	p := filepath.Join(e.dir, prefix)
	e.ok("generate-key", "--prefix", p)
	return p + ".key", p + ".pub"
}

// berth runs the binary with the registry's credentials and CA.
func (e *env) berth(args ...string) (string, string, int) {
	e.t.Helper()
	env := []string{"DOCKER_CONFIG=" + e.reg.DockerConfigDir, "COSIGN_PASSWORD=" + password}
	switch args[0] {
	case "agent", "status", "history", "reconcile", "rollback", "suspend", "resume", "init", "version":
		// They reach no registry and refuse registry flags.
	default:
		args = append(args, "--ca-file", e.reg.CAFile)
	}
	return testenv.Run(e.t, e.bin, env, args...)
}

// ok runs berth and fails the test unless it exits 0.
func (e *env) ok(args ...string) string {
	e.t.Helper()
	out, errOut, code := e.berth(args...)
	if code != 0 {
		e.t.Fatalf("berth %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// fail runs berth, fails the test unless it exits non-zero, and returns
// stderr.
func (e *env) fail(args ...string) string {
	e.t.Helper()
	out, errOut, code := e.berth(args...)
	if code == 0 {
		e.t.Fatalf("berth %s succeeded, want failure\nstdout: %s\nstderr: %s", strings.Join(args, " "), out, errOut)
	}
	return errOut
}

// okJSON runs berth with --output json and decodes stdout into v.
func (e *env) okJSON(v any, args ...string) {
	e.t.Helper()
	out := e.ok(append(args, "--output", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		e.t.Fatalf("berth %s: stdout is not JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// url returns oci://HOST/REPO[:TAG].
func (e *env) url(repoAndTag string) string { return "oci://" + e.reg.Host() + "/" + repoAndTag }

// remoteOpts reach the registry from the test with go-containerregistry.
func (e *env) remoteOpts() []remote.Option {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: e.reg.CertPool(), MinVersion: tls.VersionTLS12}
	return []remote.Option{
		remote.WithTransport(tr),
		remote.WithAuth(&authn.Basic{Username: e.reg.Username, Password: e.reg.Password}),
	}
}

// pushImage pushes a random image and returns its digest.
func (e *env) pushImage(ref string) string {
	e.t.Helper()
	img, err := random.Image(512, 1)
	if err != nil {
		e.t.Fatal(err)
	}
	r, err := name.ParseReference(e.reg.Host() + "/" + ref)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := remote.Write(r, img, e.remoteOpts()...); err != nil {
		e.t.Fatalf("push image %s: %v", r, err)
	}
	d, _ := img.Digest()
	return d.String()
}

// fleet copies examples/compose-hello into a Git repository whose compose
// file names an image in this registry, and returns the repository.
func (e *env) fleet(image string) string {
	e.t.Helper()
	src := filepath.Join(e.t.TempDir(), "fleet")
	if err := testenv.CopyDir(filepath.Join(testenv.ModuleRoot(e.t), "examples", "compose-hello"), src); err != nil {
		e.t.Fatal(err)
	}
	compose := filepath.Join(src, "apps", "web", "compose.yaml")
	b, err := os.ReadFile(compose)
	if err != nil {
		e.t.Fatal(err)
	}
	b = []byte(strings.ReplaceAll(string(b), "127.0.0.1:5000/acme/hello:1.0.0", image))
	if err := os.WriteFile(compose, b, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return testenv.GitRepo(e.t, src)
}

// pushResult is what berth push --output json prints.
type pushResult struct {
	URL        string   `json:"url"`
	Repository string   `json:"repository"`
	Tags       []string `json:"tags"`
	Digest     string   `json:"digest"`
	Revision   string   `json:"revision"`
	Source     string   `json:"source"`
	Created    string   `json:"created"`
	Locked     []struct {
		App    string `json:"app"`
		Ref    string `json:"ref"`
		Digest string `json:"digest"`
	} `json:"locked"`
}
