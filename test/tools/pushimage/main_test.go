package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBuildDir()
	os.Exit(code)
}

// TestPush pushes the hello binary the way the demo does: credentials from
// $DOCKER_CONFIG, the registry's CA from -ca-file, labels and env as flags.
func TestPush(t *testing.T) {
	if testing.Short() {
		t.Skip("starts docker-registry")
	}
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	t.Setenv("DOCKER_CONFIG", reg.DockerConfigDir)
	hello := testenv.BuildHello(t)
	ref := reg.Ref("acme/hello:1.0.0")

	out := captureStdout(t, func() error {
		return run([]string{"-binary", hello, "-ref", ref, "-ca-file", reg.CAFile, "-label", "v=1", "-env", "MESSAGE=hi"})
	})
	pinned, digest, ok := strings.Cut(strings.TrimSpace(out), "@")
	if !ok || pinned != ref || !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("output %q", out)
	}
	// The same image testenv.PushImage makes from the same options.
	if want := testenv.PushImage(t, reg, "acme/hello:same", hello, testenv.ImageOptions{Labels: map[string]string{"v": "1"}, Env: []string{"MESSAGE=hi"}}); want != digest {
		t.Errorf("pushimage pushed %s, testenv.PushImage %s", digest, want)
	}
	r, _ := name.ParseReference(ref)
	img, err := remote.Image(r, remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}), remote.WithTransport(reg.HTTPClient().Transport))
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigFile()
	if cfg.Config.Entrypoint[0] != "/hello" || cfg.Config.Labels["v"] != "1" || cfg.Config.Env[0] != "MESSAGE=hi" {
		t.Errorf("config %+v", cfg.Config)
	}

	if err := run([]string{"-ref", ref}); err == nil {
		t.Error("no -binary accepted")
	}
	if err := run([]string{"-binary", hello, "-ref", ref}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the CA: err = %v", err)
	}
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	if err := run([]string{"-binary", hello, "-ref", ref, "-ca-file", reg.CAFile}); err == nil || !strings.Contains(err.Error(), "401 Unauthorized") {
		t.Errorf("without credentials: err = %v", err)
	}
}

func captureStdout(t *testing.T, f func() error) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "stdout")
	file, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = file
	err = f()
	os.Stdout = old
	file.Close()
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	return string(data)
}
