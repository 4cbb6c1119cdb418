package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestPushVerifyPull is the publishing path end to end: lock, pack, push,
// sign, verify and pull through a TLS registry with auth.
func TestPushVerifyPull(t *testing.T) {
	e := newEnv(t)
	imgDigest := e.pushImage("acme/hello:1.0.0")
	repo := e.fleet(e.reg.Host() + "/acme/hello:1.0.0")

	var res pushResult
	e.okJSON(&res, "push", repo, e.url("fleet/line-3:v1.0.0"), "-t", "canary", "--sign-key", e.key)
	if res.Repository != e.reg.Host()+"/fleet/line-3" || !slices.Equal(res.Tags, []string{"v1.0.0", "canary"}) || !strings.HasPrefix(res.Digest, "sha256:") {
		t.Fatalf("push result = %+v", res)
	}
	if len(res.Locked) != 1 || res.Locked[0].Digest != imgDigest {
		t.Fatalf("locked = %+v, want the image pinned to %s", res.Locked, imgDigest)
	}

	// The manifest is what Flux reads, with provenance from Git.
	ref, err := name.ParseReference(e.reg.Host() + "/fleet/line-3:canary")
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(ref, e.remoteOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest.String() != res.Digest {
		t.Fatalf("canary points at %s, push said %s", desc.Digest, res.Digest)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	head := testenv.GitHead(t, repo)
	for k, want := range map[string]string{
		ocispec.AnnotationSource:   "https://git.example.com/acme/fleet.git",
		ocispec.AnnotationRevision: "main@sha1:" + head,
		ocispec.AnnotationCreated:  "2026-01-02T03:04:05Z",
	} {
		if got := m.Annotations[k]; got != want {
			t.Errorf("annotation %s = %q, want %q", k, got, want)
		}
	}
	if m.Config.MediaType != "application/vnd.cncf.flux.config.v1+json" || len(m.Layers) != 1 ||
		m.Layers[0].MediaType != "application/vnd.cncf.flux.content.v1.tar+gzip" {
		t.Errorf("manifest is not Flux-shaped: %s", desc.Manifest)
	}

	out := e.ok("verify", e.url("fleet/line-3:canary"), "--key", e.pub)
	if !strings.Contains(out, res.Digest) {
		t.Errorf("verify output %q does not name the digest", out)
	}

	dst := filepath.Join(t.TempDir(), "state")
	e.ok("pull", e.url("fleet/line-3:v1.0.0"), "-o", dst, "--key", e.pub)
	compose, err := os.ReadFile(filepath.Join(dst, "apps", "web", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := e.reg.Host() + "/acme/hello:1.0.0@" + imgDigest; !strings.Contains(string(compose), want) {
		t.Errorf("pulled compose.yaml does not pin %s:\n%s", want, compose)
	}
	if _, err := os.Stat(filepath.Join(dst, "berth.lock.json")); err != nil {
		t.Errorf("berth.lock.json missing from the artifact: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dst, "README.md")); !os.IsNotExist(err) {
		t.Errorf("README.md is in .berthignore but was packed (stat err %v)", err)
	}
	if _, err := os.Stat(filepath.Join(dst, ".git")); !os.IsNotExist(err) {
		t.Errorf(".git was packed (stat err %v)", err)
	}

	// Pull refuses to run without a trust decision, and to overwrite.
	if msg := e.fail("pull", e.url("fleet/line-3:v1.0.0"), "-o", filepath.Join(t.TempDir(), "x")); !strings.Contains(msg, "--key") {
		t.Errorf("pull without --key: %q does not say how to verify", msg)
	}
	e.fail("pull", e.url("fleet/line-3:v1.0.0"), "-o", dst, "--key", e.pub)
}

// TestReproducibleAcrossClones pushes one commit from two clones checked out
// with different umasks and folders: the digests must match.
func TestReproducibleAcrossClones(t *testing.T) {
	e := newEnv(t)
	e.pushImage("acme/hello:1.0.0")
	repo := e.fleet(e.reg.Host() + "/acme/hello:1.0.0")

	old := syscall.Umask(0o077)
	clone := testenv.CloneRepo(t, repo)
	syscall.Umask(old)
	if st, err := os.Stat(filepath.Join(clone, "berth.yaml")); err != nil || st.Mode().Perm() == 0o644 {
		t.Fatalf("clone was not checked out with another umask: %v %v", st.Mode(), err)
	}

	var a, b pushResult
	e.okJSON(&a, "push", repo, e.url("fleet/line-3:from-a"))
	e.okJSON(&b, "push", clone, e.url("fleet/line-3:from-b"))
	if a.Digest != b.Digest {
		t.Fatalf("same commit, different digests: %s vs %s", a.Digest, b.Digest)
	}

	// berth build is reproducible the same way.
	ta, tb := filepath.Join(t.TempDir(), "a.tgz"), filepath.Join(t.TempDir(), "b.tgz")
	e.ok("build", repo, "-o", ta)
	e.ok("build", clone, "-o", tb)
	ba, _ := os.ReadFile(ta)
	bb, _ := os.ReadFile(tb)
	if len(ba) == 0 || string(ba) != string(bb) {
		t.Fatalf("berth build differs between clones (%d vs %d bytes)", len(ba), len(bb))
	}
}

func TestPushRefusals(t *testing.T) {
	e := newEnv(t)
	e.pushImage("acme/hello:1.0.0")

	t.Run("dirty work tree", func(t *testing.T) {
		repo := e.fleet(e.reg.Host() + "/acme/hello:1.0.0")
		if err := os.WriteFile(filepath.Join(repo, "berth.yaml"), []byte("apiVersion: berth.dev/v1\nkind: DeviceState\napps: []\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		msg := e.fail("push", repo, e.url("fleet/dirty:v1"))
		if !strings.Contains(msg, "uncommitted changes") || !strings.Contains(msg, "berth.yaml") || !strings.Contains(msg, "--allow-dirty") {
			t.Errorf("dirty push: %q", msg)
		}
		e.ok("push", repo, e.url("fleet/dirty:v1"), "--allow-dirty")
	})

	t.Run("unknown image", func(t *testing.T) {
		repo := e.fleet(e.reg.Host() + "/acme/nope:9.9.9")
		msg := e.fail("push", repo, e.url("fleet/unknown:v1"))
		for _, want := range []string{"apps/web/compose.yaml", `app "web"`, e.reg.Host() + "/acme/nope:9.9.9"} {
			if !strings.Contains(msg, want) {
				t.Errorf("lock failure %q does not name %q", msg, want)
			}
		}
		// Nothing was pushed.
		e.fail("verify", e.url("fleet/unknown:v1"), "--key", e.pub)
		if got := e.reg.RequestCount(`"PUT /v2/fleet/unknown/manifests/`); got != 0 {
			t.Errorf("%d manifest PUTs after a failed lock", got)
		}
	})

	t.Run("invalid berth.yaml", func(t *testing.T) {
		src := t.TempDir()
		if err := os.WriteFile(filepath.Join(src, "berth.yaml"), []byte("apiVersion: berth.dev/v1\nkind: DeviceState\napps:\n  - name: web\n    compsoe: {path: x}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		repo := testenv.GitRepo(t, src)
		msg := e.fail("push", repo, e.url("fleet/bad:v1"))
		if !strings.Contains(msg, "berth.yaml:5") || !strings.Contains(msg, "compsoe") {
			t.Errorf("invalid berth.yaml: %q does not name file, line and field", msg)
		}
	})
}
