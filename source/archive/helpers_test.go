package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// spec describes one path of a test tree.
type spec struct {
	name string // slash-separated
	body string // regular file content
	exec bool   // regular file with execute bits
	link string // symlink target
	dir  bool   // directory
}

// perms are the permissions and times a test tree is created with.
type perms struct {
	file, exec, dir fs.FileMode
	mtime           time.Time
	useUmask        bool // leave the permissions to the umask
}

var (
	permsStd    = perms{file: 0o644, exec: 0o755, dir: 0o755, mtime: time.Date(2024, 5, 1, 12, 0, 0, 123, time.UTC)}
	permsStrict = perms{file: 0o600, exec: 0o700, dir: 0o700, mtime: time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)}
	permsLoose  = perms{file: 0o666, exec: 0o751, dir: 0o777, mtime: time.Now()}
	permsUmask  = perms{file: 0o666, exec: 0o777, dir: 0o777, mtime: time.Now(), useUmask: true}
)

// goldenTree is the small tree of the golden and reproducibility tests.
var goldenTree = []spec{
	{name: ".berthignore", body: "# comment\n*.log\n!keep.log\nbuild/\n"},
	{name: ".git/config", body: "[core]\n"},
	{name: ".git/HEAD", body: "ref: refs/heads/main\n"},
	{name: "README.md", body: "hello\n"},
	{name: "bin/run.sh", body: "#!/bin/sh\necho hi\n", exec: true},
	{name: "build/out.bin", body: "binary"},
	{name: "compose/docker-compose.yml", body: "services: {}\n"},
	{name: "compose/current.yml", link: "docker-compose.yml"},
	{name: "compose/up", link: "../bin"},
	{name: "debug.log", body: "noise\n"},
	{name: "empty", dir: true},
	{name: "keep.log", body: "kept\n"},
	{name: "sub/.git", body: "gitdir: ../.git/modules/sub\n"},
	{name: "sub/a-b.txt", body: "dash\n"},
	{name: "sub/file.txt", body: strings.Repeat("x", 3000)},
	{name: "sub/nested/deep.txt", body: ""},
	{name: "sub-file", body: "sorts between sub/ and sub/x\n"},
	{name: strings.Repeat("long-name-", 12) + ".txt", body: "long\n"},
}

// makeTree creates specs below dir with p.
func makeTree(t testing.TB, dir string, specs []spec, p perms) {
	t.Helper()
	if err := os.MkdirAll(dir, p.dir); err != nil {
		t.Fatal(err)
	}
	var dirs []string
	mkdir := func(d string) {
		if err := os.MkdirAll(d, p.dir); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range specs {
		path := filepath.Join(dir, filepath.FromSlash(s.name))
		mkdir(filepath.Dir(path))
		switch {
		case s.dir:
			mkdir(path)
		case s.link != "":
			if err := os.Symlink(s.link, path); err != nil {
				t.Fatal(err)
			}
			continue
		default:
			mode := p.file
			if s.exec {
				mode = p.exec
			}
			if err := os.WriteFile(path, []byte(s.body), mode); err != nil {
				t.Fatal(err)
			}
			if !p.useUmask {
				if err := os.Chmod(path, mode); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chtimes(path, p.mtime, p.mtime); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Directories: permissions and times last, deepest first.
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	slices.Reverse(dirs)
	for _, d := range dirs {
		if !p.useUmask {
			if err := os.Chmod(d, p.dir); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chtimes(d, p.mtime, p.mtime); err != nil {
			t.Fatal(err)
		}
	}
}

// build runs Build and returns the archive bytes.
func build(t testing.TB, dir string, opts BuildOptions) ([]byte, BuildResult) {
	t.Helper()
	var buf bytes.Buffer
	res, err := Build(context.Background(), dir, &buf, opts)
	if err != nil {
		t.Fatalf("Build(%s): %v", dir, err)
	}
	return buf.Bytes(), res
}

// listing returns "mode type name[ -> target] size" lines for a tar+gzip
// archive.
func listing(t testing.TB, data []byte) []string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var lines []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		line := fmt.Sprintf("%c %04o %s", hdr.Typeflag, hdr.Mode, hdr.Name)
		if hdr.Linkname != "" {
			line += " -> " + hdr.Linkname
		}
		if hdr.Typeflag == tar.TypeReg {
			line += " " + strconv.FormatInt(hdr.Size, 10)
		}
		lines = append(lines, line)
	}
	return lines
}

// names returns the entry names of a tar+gzip archive.
func names(t testing.TB, data []byte) []string {
	t.Helper()
	var out []string
	for _, l := range listing(t, data) {
		f := strings.Fields(l)
		out = append(out, f[2])
	}
	return out
}

// tEntry is one entry of a hand-made test archive.
type tEntry struct {
	name string
	typ  byte
	link string
	mode int64
	body string
}

func file(name, body string) tEntry {
	return tEntry{name: name, typ: tar.TypeReg, mode: 0o644, body: body}
}
func dirEntry(name string) tEntry { return tEntry{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) tEntry {
	return tEntry{name: name, typ: tar.TypeSymlink, link: target, mode: 0o777}
}

// makeTar returns a tar stream of entries, gzipped when gz is true.
func makeTar(t testing.TB, gz bool, entries ...tEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	tw := tar.NewWriter(w)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, ModTime: time.Unix(1e9, 0)}
		if e.typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if e.typ == tar.TypeXGlobalHeader {
			hdr = &tar.Header{Typeflag: e.typ, PAXRecords: map[string]string{"comment": e.body}}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		if e.typ == tar.TypeReg {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func gzipBytes(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(data)
	zw.Close()
	return buf.Bytes()
}

// sandbox is a folder holding the extraction target and, outside the
// target's parent, a sentinel file that attacks aim at.
type sandbox struct {
	base, parent, target, sentinel string
}

const sentinelContent = "do not touch\n"

func newSandbox(t testing.TB) sandbox {
	t.Helper()
	return newSandboxIn(t, t.TempDir())
}

// newFastSandbox is newSandbox on a tmpfs when there is one, where fsync
// costs nothing: fuzzers run many more inputs.
func newFastSandbox(t testing.TB) sandbox {
	t.Helper()
	base, err := os.MkdirTemp("/dev/shm", "berth-archive-")
	if err != nil {
		return newSandbox(t)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	return newSandboxIn(t, base)
}

func newSandboxIn(t testing.TB, base string) sandbox {
	t.Helper()
	s := sandbox{
		base:     base,
		parent:   filepath.Join(base, "p"),
		target:   filepath.Join(base, "p", "out"),
		sentinel: filepath.Join(base, "sentinel"),
	}
	if err := os.Mkdir(s.parent, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.sentinel, []byte(sentinelContent), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// checkContained asserts that nothing was written outside the target: base
// holds only the parent and the sentinel, the sentinel is unchanged, the
// parent holds at most the target (wantTarget says whether it must exist),
// and nothing inside the target resolves outside of it.
func (s sandbox) checkContained(t testing.TB, wantTarget bool) {
	t.Helper()
	if got := dirNames(t, s.base); !slices.Equal(got, []string{"p", "sentinel"}) {
		t.Errorf("base folder holds %q, want only p and sentinel", got)
	}
	if b, err := os.ReadFile(s.sentinel); err != nil || string(b) != sentinelContent {
		t.Errorf("sentinel changed: %q, %v", b, err)
	}
	want := []string(nil)
	if wantTarget {
		want = []string{"out"}
	}
	if got := dirNames(t, s.parent); !slices.Equal(got, want) {
		t.Errorf("parent folder holds %q, want %q", got, want)
	}
	if !wantTarget {
		return
	}
	realTarget, err := filepath.EvalSymlinks(s.target)
	if err != nil {
		t.Fatal(err)
	}
	filepath.WalkDir(s.target, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Errorf("walking %s: %v", path, err)
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			t.Errorf("%s: %v", path, err)
			return nil
		}
		if fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
			t.Errorf("%s has mode %v", path, fi.Mode())
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if real, err := filepath.EvalSymlinks(path); err == nil {
				if real != realTarget && !strings.HasPrefix(real, realTarget+string(filepath.Separator)) {
					t.Errorf("symlink %s resolves outside the target to %s", path, real)
				}
			}
		}
		return nil
	})
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}
