//go:build unix

package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

const extractHelperEnv = "BERTH_ARCHIVE_EXTRACT_UMASK_HELPER"

// TestExtractUmaskHelper is not a test: TestExtractUmask runs it in a
// subprocess under the umask it is given, to extract an archive there.
func TestExtractUmaskHelper(t *testing.T) {
	dir := os.Getenv(extractHelperEnv)
	if dir == "" {
		t.Skip("helper process only")
	}
	m, err := strconv.ParseUint(os.Getenv(extractHelperEnv+"_MASK"), 8, 32)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Umask(int(m))
	run := tEntry{name: "bin/run", typ: tar.TypeReg, mode: 0o755, body: "#!/bin/sh\n"}
	big := tEntry{name: "data/big.bin", typ: tar.TypeReg, mode: 0o600, body: strings.Repeat("x", smallFile+1)}
	data := tarOf(file("a.txt", "a"), file("data/b.txt", "b"), run, big)(t)
	if _, err := ExtractAtomic(context.Background(), bytes.NewReader(data), dir, Limits{}); err != nil {
		t.Fatal(err)
	}
}

// TestExtractUmask: extracted files get the archive's normalised modes
// (0644, 0755) whatever the umask, on the workers' path for small files
// and the streaming one for large files.
func TestExtractUmask(t *testing.T) {
	for _, mask := range []string{"077", "022", "000"} {
		t.Run(mask, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			cmd := exec.Command(os.Args[0], "-test.run=^TestExtractUmaskHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), extractHelperEnv+"="+dir, extractHelperEnv+"_MASK="+mask)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("helper: %v\n%s", err, out)
			}
			for name, want := range map[string]os.FileMode{"a.txt": 0o644, "data/b.txt": 0o644, "bin/run": 0o755, "data/big.bin": 0o644, "data": 0o755 | os.ModeDir} {
				fi, err := os.Lstat(filepath.Join(dir, name))
				if err != nil || fi.Mode() != want {
					t.Errorf("umask %s: %s: mode %v (%v), want %v", mask, name, fi.Mode(), err, want)
				}
			}
		})
	}
}
