package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestSignatures checks, in both signature formats on the real registry
// (which has no referrers API, so bundles go through the tag fallback), that
// exactly the right signatures verify and every wrong one is refused with
// its own error.
func TestSignatures(t *testing.T) {
	for _, format := range []string{"bundle", "legacy"} {
		t.Run(format, func(t *testing.T) {
			e := newEnv(t)
			e.pushImage("acme/hello:1.0.0")
			repo := e.fleet(e.reg.Host() + "/acme/hello:1.0.0")
			newKey, newPub := e.keyPair("rotated")

			// A: signed with the old key. B: another commit, unsigned.
			var a, b pushResult
			e.okJSON(&a, "push", repo, e.url("fleet/line-3:a"), "--sign-key", e.key, "--signature-format", format)
			if err := os.WriteFile(filepath.Join(repo, "NOTES"), []byte("b\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			testenv.GitCommitAll(t, repo, testenv.GitOptions{Message: "b"})
			e.okJSON(&b, "push", repo, e.url("fleet/line-3:b"))
			if a.Digest == b.Digest {
				t.Fatal("two commits pushed the same digest")
			}

			var v struct {
				Verified bool   `json:"verified"`
				Format   string `json:"format"`
				Key      string `json:"key"`
			}
			e.okJSON(&v, "verify", e.url("fleet/line-3:a"), "--key", e.pub)
			if !v.Verified || v.Format != format || v.Key != e.pub {
				t.Errorf("verify a = %+v, want verified %s by %s", v, format, e.pub)
			}

			refusals := []struct {
				name, ref, key, want string
			}{
				{"unsigned", "fleet/line-3:b", e.pub, "no signature found"},
				{"wrong key", "fleet/line-3:a", newPub, "no signature verifies"},
			}
			for _, r := range refusals {
				msg := e.fail("verify", e.url(r.ref), "--key", r.key)
				if !strings.Contains(msg, r.want) {
					t.Errorf("%s: %q does not say %q", r.name, msg, r.want)
				}
			}

			// A signature copied from A onto B names A's digest: refused.
			hexA := strings.TrimPrefix(a.Digest, "sha256:")
			hexB := strings.TrimPrefix(b.Digest, "sha256:")
			sigTag := map[string]string{"bundle": "sha256-" + hexA, "legacy": "sha256-" + hexA + ".sig"}[format]
			e.ok("tag", e.url("fleet/line-3:"+sigTag), strings.Replace(sigTag, hexA, hexB, 1))
			msg := e.fail("verify", e.url("fleet/line-3:b"), "--key", e.pub)
			if !strings.Contains(msg, "signature names a different digest") {
				t.Errorf("copied signature: %q", msg)
			}
			dst := filepath.Join(t.TempDir(), "b")
			e.fail("pull", e.url("fleet/line-3:b"), "-o", dst, "--key", e.pub)
			if _, err := os.Stat(dst); !os.IsNotExist(err) {
				t.Errorf("pull of a refused artifact created %s", dst)
			}

			// Key rotation: B signed with the new key verifies with either
			// key set that holds the new key.
			e.ok("sign", e.url("fleet/line-3:b"), "--sign-key", newKey, "--signature-format", format)
			e.ok("verify", e.url("fleet/line-3:b"), "--key", e.pub, "--key", newPub)
			e.ok("verify", e.url("fleet/line-3@"+b.Digest), "--key", newPub)
			e.fail("verify", e.url("fleet/line-3:b"), "--key", e.pub)
		})
	}
}

// TestTamperedBlobRefused corrupts the layer in the registry's storage: the
// signature (over the manifest) still verifies, but the pull catches the
// bytes and leaves nothing behind.
func TestTamperedBlobRefused(t *testing.T) {
	e := newEnv(t)
	e.pushImage("acme/hello:1.0.0")
	repo := e.fleet(e.reg.Host() + "/acme/hello:1.0.0")
	var a pushResult
	e.okJSON(&a, "push", repo, e.url("fleet/line-3:v1"), "--sign-key", e.key)

	layers, err := filepath.Glob(filepath.Join(e.reg.StorageDir, "docker/registry/v2/blobs/sha256/*/*/data"))
	if err != nil || len(layers) == 0 {
		t.Fatalf("no blobs in %s: %v", e.reg.StorageDir, err)
	}
	tampered := 0
	for _, p := range layers {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b { // only gzip layers
			continue
		}
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		tampered++
	}
	if tampered == 0 {
		t.Fatal("found no gzip layer to tamper with")
	}
	e.ok("verify", e.url("fleet/line-3:v1"), "--key", e.pub)
	parent := t.TempDir()
	msg := e.fail("pull", e.url("fleet/line-3:v1"), "-o", filepath.Join(parent, "state"), "--key", e.pub)
	if !strings.Contains(msg, "digest mismatch") {
		t.Errorf("tampered blob: %q does not say digest mismatch", msg)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("a refused pull left %v behind", entries)
	}
}
