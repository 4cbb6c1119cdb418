//go:build unix

package archive

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const helperEnv = "BERTH_ARCHIVE_UMASK_HELPER"

// TestUmaskHelper is not a test: TestBuildUmask runs it in a subprocess
// under umask 077 to create and archive the golden tree.
func TestUmaskHelper(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper process only")
	}
	syscall.Umask(0o077)
	makeTree(t, dir, goldenTree, permsUmask)
	_, res := build(t, dir, BuildOptions{})
	os.Stdout.WriteString("\nDIGEST=" + res.Digest + "\n")
}

func TestBuildUmask(t *testing.T) {
	ref := filepath.Join(t.TempDir(), "ref")
	makeTree(t, ref, goldenTree, permsStd)
	_, want := build(t, ref, BuildOptions{})

	dir := filepath.Join(t.TempDir(), "umask077")
	cmd := exec.Command(os.Args[0], "-test.run=^TestUmaskHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	fi, err := os.Stat(filepath.Join(dir, "README.md"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("helper did not run under umask 077: %v %v", fi.Mode(), err)
	}
	_, digest, ok := strings.Cut(string(out), "\nDIGEST=")
	if !ok {
		t.Fatalf("no digest in helper output:\n%s", out)
	}
	if digest = strings.TrimSpace(strings.SplitN(digest, "\n", 2)[0]); digest != want.Digest {
		t.Errorf("digest under umask 077 = %s, want %s", digest, want.Digest)
	}
}

func TestBuildSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	makeTree(t, dir, []spec{{name: "a", body: "a"}}, permsStd)
	if err := syscall.Mkfifo(filepath.Join(dir, "sub-fifo"), 0o644); err != nil {
		t.Skip(err)
	}
	var buf bytes.Buffer
	_, err := Build(context.Background(), dir, &buf, BuildOptions{})
	if !errors.Is(err, ErrSpecialFile) || !strings.Contains(err.Error(), `"sub-fifo"`) {
		t.Errorf("err = %v, want ErrSpecialFile naming sub-fifo", err)
	}
	// Ignored special files are fine.
	if _, err := Build(context.Background(), dir, &buf, BuildOptions{Ignore: []string{"sub-fifo"}}); err != nil {
		t.Errorf("ignored fifo: %v", err)
	}
}
