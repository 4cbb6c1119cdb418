package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/source/oci"
)

func TestListTagDiff(t *testing.T) {
	e := newEnv(t)
	e.pushImage("acme/hello:1.0.0")
	repo := e.fleet(e.reg.Host() + "/acme/hello:1.0.0")
	var first pushResult
	e.okJSON(&first, "push", repo, e.url("fleet/line-3:v1.0.0"), "--sign-key", e.key,
		"-t", "v1.4.2", "-t", "v2.0.0-rc.1", "-t", "v2.0.0", "-t", "main-abc123-1700000000", "--annotation", "acme.dev/line=3")

	var tags []string
	e.okJSON(&tags, "list", e.url("fleet/line-3"))
	if want := []string{"main-abc123-1700000000", "v1.0.0", "v1.4.2", "v2.0.0", "v2.0.0-rc.1"}; !slices.Equal(tags, want) {
		t.Errorf("list = %v, want %v (no signature tags)", tags, want)
	}
	e.okJSON(&tags, "list", e.url("fleet/line-3"), "--semver", ">=1.0.0 <2.0.0")
	if want := []string{"v1.0.0", "v1.4.2"}; !slices.Equal(tags, want) {
		t.Errorf("list --semver = %v, want %v", tags, want)
	}
	e.okJSON(&tags, "list", e.url("fleet/line-3"), "--semver", ">=2.0.0-0")
	if want := []string{"v2.0.0-rc.1", "v2.0.0"}; !slices.Equal(tags, want) {
		t.Errorf("list --semver with pre-releases = %v, want %v", tags, want)
	}
	e.okJSON(&tags, "list", e.url("fleet/line-3"), "--filter", "^main-")
	if want := []string{"main-abc123-1700000000"}; !slices.Equal(tags, want) {
		t.Errorf("list --filter = %v, want %v", tags, want)
	}

	// tag promotes without changing the digest, and the signature follows
	// the digest.
	var tagged struct{ Digest string }
	e.okJSON(&tagged, "tag", e.url("fleet/line-3:v1.0.0"), "stable")
	if tagged.Digest != first.Digest {
		t.Errorf("tag digest = %s, want %s", tagged.Digest, first.Digest)
	}
	e.ok("verify", e.url("fleet/line-3:stable"), "--key", e.pub)

	// diff: nothing changed, then one file changed, one added, one removed.
	if _, _, code := e.berth("diff", repo, e.url("fleet/line-3:stable")); code != 0 {
		t.Errorf("diff of the pushed commit exits %d, want 0", code)
	}
	compose := filepath.Join(repo, "apps", "web", "compose.yaml")
	b, _ := os.ReadFile(compose)
	if err := os.WriteFile(compose, bytes.Replace(b, []byte("hello from berth"), []byte("changed"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "apps", "web", "extra.env"), []byte("A=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(repo, ".berthignore")); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := e.berth("diff", repo, e.url("fleet/line-3:stable"), "--output", "json")
	if code != 2 {
		t.Fatalf("diff with changes exits %d, want 2\n%s", code, errOut)
	}
	var ch struct{ Added, Removed, Modified []string }
	if err := json.Unmarshal([]byte(out), &ch); err != nil {
		t.Fatalf("diff json: %v\n%s", err, out)
	}
	if !slices.Contains(ch.Modified, "apps/web/compose.yaml") || !slices.Contains(ch.Added, "apps/web/extra.env") ||
		!slices.Contains(ch.Removed, ".berthignore") || !slices.Contains(ch.Added, "README.md") {
		t.Errorf("diff = %+v", ch)
	}
}

func TestLoginAndCredentials(t *testing.T) {
	e := newEnv(t)
	e.pushImage("fleet/line-3:v1")
	cfgDir := t.TempDir()
	env := []string{"DOCKER_CONFIG=" + cfgDir}
	run := func(stdin string, args ...string) (string, int) {
		_, errOut, code := testenv.RunWith(t, testenv.RunOptions{Env: env, Stdin: stdin}, e.bin, append(args, "--ca-file", e.reg.CAFile)...)
		return errOut, code
	}
	// Without credentials the registry refuses, and berth says what to do.
	if msg, code := run("", "list", e.url("fleet/line-3")); code == 0 || !strings.Contains(msg, "berth login") {
		t.Errorf("anonymous list: exit %d, %q", code, msg)
	}
	if msg, code := run("wrong\n", "login", e.reg.Host(), "-u", e.reg.Username, "--password-stdin"); code == 0 || !strings.Contains(msg, "unauthorized") {
		t.Errorf("login with a wrong password: exit %d, %q", code, msg)
	}
	if msg, code := run(e.reg.Password+"\n", "login", e.reg.Host(), "-u", e.reg.Username, "--password-stdin"); code != 0 {
		t.Fatalf("login: exit %d, %q", code, msg)
	}
	cfg, err := os.ReadFile(filepath.Join(cfgDir, "config.json"))
	if err != nil || !strings.Contains(string(cfg), e.reg.Host()) {
		t.Fatalf("config.json after login: %s %v", cfg, err)
	}
	if msg, code := run("", "list", e.url("fleet/line-3")); code != 0 {
		t.Errorf("list after login: exit %d, %q", code, msg)
	}
	// Without the CA the certificate is not trusted, and berth says so.
	_, errOut, code := testenv.Run(t, e.bin, env, "list", e.url("fleet/line-3"))
	if code == 0 || !strings.Contains(errOut, "--ca-file") {
		t.Errorf("list without the CA: exit %d, %q", code, errOut)
	}
}

// TestMaliciousArtifactRefused pushes signed artifacts whose layers attack
// the extractor: each pull fails, says why, and writes nothing anywhere.
func TestMaliciousArtifactRefused(t *testing.T) {
	e := newEnv(t)
	c, err := oci.NewClient(oci.Options{DockerConfig: e.reg.DockerConfig, CAFile: e.reg.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		entries []tar.Header
		want    string
	}{
		{"path traversal", []tar.Header{{Name: "../../escaped", Typeflag: tar.TypeReg, Mode: 0o644}}, "unsafe path"},
		{"absolute path", []tar.Header{{Name: "/tmp/escaped", Typeflag: tar.TypeReg, Mode: 0o644}}, "unsafe path"},
		{"symlink out", []tar.Header{{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/etc"}, {Name: "link/passwd", Typeflag: tar.TypeReg, Mode: 0o644}}, "link"},
		{"hard link", []tar.Header{{Name: "pw", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}}, "hard link"},
		{"device", []tar.Header{{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}, "special file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			layer := tarGz(t, tc.entries)
			ref, _ := oci.ParseReference(e.url("evil/" + strings.ReplaceAll(tc.name, " ", "-") + ":v1"))
			desc, err := c.Push(context.Background(), ref, oci.Artifact{Layer: oci.Blob{
				Digest: digest.FromBytes(layer), Size: int64(len(layer)),
				Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer)), nil },
			}})
			if err != nil {
				t.Fatal(err)
			}
			e.ok("sign", ref.WithDigest(desc.Digest.String()).String(), "--sign-key", e.key)
			parent := t.TempDir()
			msg := e.fail("pull", ref.String(), "-o", filepath.Join(parent, "state"), "--key", e.pub)
			if !strings.Contains(msg, tc.want) {
				t.Errorf("pull: %q does not say %q", msg, tc.want)
			}
			if entries, _ := os.ReadDir(parent); len(entries) != 0 {
				t.Errorf("refused pull left %v in the parent folder", entries)
			}
			if _, err := os.Lstat("/tmp/escaped"); err == nil {
				t.Errorf("/tmp/escaped was written")
			}
		})
	}

	// A gzip bomb: 64 MiB of zeros, refused by a 16 MiB cap.
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	_ = tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: 64 << 20})
	_, _ = tw.Write(make([]byte, 64<<20))
	_ = tw.Close()
	_ = zw.Close()
	ref, _ := oci.ParseReference(e.url("evil/bomb:v1"))
	layer := bomb.Bytes()
	desc, err := c.Push(context.Background(), ref, oci.Artifact{Layer: oci.Blob{
		Digest: digest.FromBytes(layer), Size: int64(len(layer)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer)), nil },
	}})
	if err != nil {
		t.Fatal(err)
	}
	e.ok("sign", ref.WithDigest(desc.Digest.String()).String(), "--sign-key", e.key)
	parent := t.TempDir()
	msg := e.fail("pull", ref.String(), "-o", filepath.Join(parent, "state"), "--key", e.pub, "--max-size", "16777216")
	if !strings.Contains(msg, "over the 16777216 bytes limit") {
		t.Errorf("gzip bomb: %q does not name the limit", msg)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("refused pull left %v behind", entries)
	}
}

func tarGz(t *testing.T, entries []tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, h := range entries {
		h := h
		body := []byte{}
		if h.Typeflag == tar.TypeReg {
			body = []byte("pwned\n")
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
