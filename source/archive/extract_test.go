package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"
)

// lyingHeader returns a tar stream whose only file header says size bytes
// while body follows it (then padding and the end-of-archive marker).
func lyingHeader(t testing.TB, name string, size int64, body []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size}); err != nil {
		t.Fatal(err)
	}
	tw.Flush()
	out := append(buf.Bytes()[:512:512], body...)
	if pad := len(out) % 512; pad != 0 {
		out = append(out, make([]byte, 512-pad)...)
	}
	return append(out, make([]byte, 1024)...)
}

func TestExtractAttacks(t *testing.T) {
	many := make([]tEntry, 0, 20)
	for i := range 20 {
		many = append(many, file(strings.Repeat("f", i+1), "x"))
	}
	tests := []struct {
		name    string
		data    func(t testing.TB) []byte
		lim     Limits
		wantErr error
		errText string
		absent  []string // paths that must not exist in the target
	}{
		{name: "dot dot", data: tarOf(file("../sentinel", "pwned")), wantErr: ErrUnsafePath,
			errText: `archive entry "../sentinel": path has a ".." component: unsafe path: refused`},
		{name: "dot dot deep", data: tarOf(file("../../sentinel", "pwned")), wantErr: ErrUnsafePath},
		{name: "absolute", data: tarOf(file("/etc/x", "pwned")), wantErr: ErrUnsafePath, errText: "absolute path"},
		{name: "dot dot after cleaning", data: tarOf(file("a/../../sentinel", "pwned")), wantErr: ErrUnsafePath},
		{name: "dot dot inside", data: tarOf(file("a/../b", "x")), wantErr: ErrUnsafePath},
		{name: "target itself as file", data: tarOf(file(".", "x")), wantErr: ErrUnsafePath},
		{name: "symlink to /etc", data: tarOf(symlink("etc", "/etc")), wantErr: ErrLinkOutside,
			errText: `archive entry "etc": symlink target "/etc" is absolute`},
		{name: "symlink to ../../x", data: tarOf(dirEntry("a/"), symlink("a/l", "../../sentinel")), wantErr: ErrLinkOutside},
		{name: "symlink to ..", data: tarOf(symlink("link", ".."), file("link/evil", "pwned")), wantErr: ErrLinkOutside,
			absent: []string{"link"}},
		{name: "file through inside symlink", data: tarOf(dirEntry("sub/"), symlink("link", "sub"), file("link/evil", "x")),
			wantErr: ErrUnsafePath, errText: `parent "link" is a symlink`, absent: []string{"sub/evil"}},
		{name: "file over symlink", data: tarOf(dirEntry("sub/"), symlink("a", "sub/x"), file("a", "pwned")),
			wantErr: ErrDuplicateEntry, absent: []string{"sub/x"}},
		{name: "symlink escaping through another", data: tarOf(symlink("t", "s/.."), symlink("s", ".")),
			wantErr: ErrLinkOutside, errText: "through other symlinks"},
		{name: "escaping pair then a refused entry", data: tarOf(symlink("s", "."), symlink("t", "s/.."), tEntry{name: "f", typ: tar.TypeFifo}),
			wantErr: ErrSpecialFile, absent: []string{"t"}},
		{name: "escaping pair then garbage", data: func(t testing.TB) []byte {
			return append(makeTar(t, false, symlink("s", "."), symlink("t", "s/..")), "trailing"...)
		}, wantErr: ErrLinkOutside, absent: []string{"t"}},
		{name: "empty symlink", data: tarOf(symlink("l", "")), wantErr: ErrLinkOutside},
		{name: "hard link outside", data: tarOf(tEntry{name: "passwd", typ: tar.TypeLink, link: "/etc/passwd"}),
			wantErr: ErrHardLink, errText: `"passwd": hard link to "/etc/passwd"`},
		{name: "hard link inside", data: tarOf(file("a", "a"), tEntry{name: "b", typ: tar.TypeLink, link: "a"}),
			wantErr: ErrHardLink, absent: []string{"b"}},
		{name: "char device", data: tarOf(tEntry{name: "null", typ: tar.TypeChar, mode: 0o666}), wantErr: ErrSpecialFile,
			absent: []string{"null"}},
		{name: "block device", data: tarOf(tEntry{name: "sda", typ: tar.TypeBlock, mode: 0o660}), wantErr: ErrSpecialFile},
		{name: "fifo", data: tarOf(tEntry{name: "fifo", typ: tar.TypeFifo, mode: 0o644}), wantErr: ErrSpecialFile},
		{name: "unknown type", data: tarOf(tEntry{name: "x", typ: 'Z', mode: 0o644}), wantErr: ErrSpecialFile},
		{name: "over MaxSize", data: tarOf(file("a", strings.Repeat("a", 600)), file("b", strings.Repeat("b", 600))),
			lim: Limits{MaxSize: 1000}, wantErr: ErrTooLarge, absent: []string{"b"}},
		{name: "over MaxFileSize", data: tarOf(file("a", strings.Repeat("a", 600))),
			lim: Limits{MaxFileSize: 500}, wantErr: ErrTooLarge, absent: []string{"a"}},
		{name: "header smaller than content", data: func(t testing.TB) []byte {
			return gzipBytes(t, lyingHeader(t, "a", 10, bytes.Repeat([]byte("A"), 5000)))
		}, wantErr: ErrInvalidArchive},
		{name: "header larger than content", data: func(t testing.TB) []byte {
			return gzipBytes(t, lyingHeader(t, "a", 100_000, bytes.Repeat([]byte("A"), 10))[:1024])
		}, wantErr: ErrInvalidArchive},
		{name: "header larger than limit", data: func(t testing.TB) []byte {
			return gzipBytes(t, lyingHeader(t, "a", 1<<32, bytes.Repeat([]byte("A"), 10)))
		}, wantErr: ErrTooLarge, absent: []string{"a"}},
		{name: "too many files", data: tarOf(many...), lim: Limits{MaxFiles: 10}, wantErr: ErrTooManyFiles},
		{name: "too many implicit folders", data: tarOf(file("a/b/c/d/e/f/g/h/i/j/k", "x")), lim: Limits{MaxFiles: 5},
			wantErr: ErrTooManyFiles, absent: []string{"a"}},
		{name: "duplicate file", data: tarOf(file("a", "1"), file("a", "2")), wantErr: ErrDuplicateEntry},
		{name: "file then folder", data: tarOf(file("a", "1"), dirEntry("a/")), wantErr: ErrDuplicateEntry},
		{name: "duplicate folder", data: tarOf(dirEntry("a/"), dirEntry("a")), wantErr: ErrDuplicateEntry},
		{name: "file below file", data: tarOf(file("a", "1"), file("a/b", "2")), wantErr: ErrUnsafePath},
		{name: "garbage", data: func(testing.TB) []byte { return bytes.Repeat([]byte("not an archive\n"), 100) },
			wantErr: ErrInvalidArchive, errText: "not a valid tar"},
		{name: "short garbage", data: func(testing.TB) []byte { return []byte("x") }, wantErr: ErrInvalidArchive},
		{name: "empty", data: func(testing.TB) []byte { return nil }, wantErr: ErrInvalidArchive},
		{name: "empty gzip", data: func(t testing.TB) []byte { return gzipBytes(t, nil) }, wantErr: ErrInvalidArchive},
		{name: "gzip garbage", data: func(t testing.TB) []byte { return gzipBytes(t, bytes.Repeat([]byte("x"), 2000)) },
			wantErr: ErrInvalidArchive},
		{name: "truncated gzip", data: func(t testing.TB) []byte {
			d := makeTar(t, true, file("a", strings.Repeat("abc", 5000)))
			return d[:len(d)/2]
		}, wantErr: ErrInvalidArchive},
		{name: "corrupt gzip header", data: func(t testing.TB) []byte { return []byte{0x1f, 0x8b, 0, 0, 0} }, wantErr: ErrInvalidArchive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := tt.data(t)

			s := newSandbox(t)
			_, err := Extract(context.Background(), bytes.NewReader(data), s.target, tt.lim)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Extract err = %v, want %v", err, tt.wantErr)
			}
			if tt.errText != "" && !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("error %q does not contain %q", err, tt.errText)
			}
			s.checkContained(t, true)
			for _, p := range tt.absent {
				if _, err := os.Lstat(filepath.Join(s.target, p)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s was created", p)
				}
			}

			s = newSandbox(t)
			_, err = ExtractAtomic(context.Background(), bytes.NewReader(data), s.target, tt.lim)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ExtractAtomic err = %v, want %v", err, tt.wantErr)
			}
			s.checkContained(t, false)

			_, err = Diff(context.Background(), t.TempDir(), bytes.NewReader(data), DiffOptions{Limits: tt.lim})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Diff err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// tarOf returns a data func for a gzipped archive of entries.
func tarOf(entries ...tEntry) func(testing.TB) []byte {
	return func(t testing.TB) []byte { return makeTar(t, true, entries...) }
}

func TestExtractValid(t *testing.T) {
	entries := []tEntry{
		{name: "", typ: tar.TypeXGlobalHeader, body: "global"},
		dirEntry("./"),
		file("./a.txt", "a"),
		{name: "bin/tool", typ: tar.TypeReg, mode: 0o4755 | 0o2000, body: "#!/bin/sh\n"},
		{name: "odd", typ: tar.TypeReg, mode: 0o100, body: "exec bit only for owner"},
		{name: "private", typ: tar.TypeReg, mode: 0o600, body: "p"},
		dirEntry("bin/"), // after an implicit creation
		{name: "sticky/", typ: tar.TypeDir, mode: 0o1777},
		symlink("bin/a", "../a.txt"),
		symlink("dangling", "nowhere/file"),
		file("deep/er/file", ""),
	}
	for _, gz := range []bool{true, false} {
		name := "tar"
		if gz {
			name = "tar+gzip"
		}
		t.Run(name, func(t *testing.T) {
			s := newSandbox(t)
			res, err := Extract(context.Background(), bytes.NewReader(makeTar(t, gz, entries...)), s.target, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if want := (ExtractResult{Files: 7, Size: int64(1 + 10 + 23 + 1)}); res != want {
				t.Errorf("result %+v, want %+v", res, want)
			}
			s.checkContained(t, true)
			want := map[string]fs.FileMode{
				"":             fs.ModeDir | 0o755,
				"a.txt":        0o644,
				"bin":          fs.ModeDir | 0o755,
				"bin/tool":     0o755,
				"odd":          0o755,
				"private":      0o644,
				"sticky":       fs.ModeDir | 0o755,
				"bin/a":        fs.ModeSymlink | 0o777,
				"dangling":     fs.ModeSymlink | 0o777,
				"deep":         fs.ModeDir | 0o755,
				"deep/er":      fs.ModeDir | 0o755,
				"deep/er/file": 0o644,
			}
			got := map[string]fs.FileMode{}
			filepath.WalkDir(s.target, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					t.Fatal(err)
				}
				fi, _ := d.Info()
				rel, _ := filepath.Rel(s.target, p)
				if rel == "." {
					rel = ""
				}
				got[filepath.ToSlash(rel)] = fi.Mode()
				return nil
			})
			for p, m := range want {
				if got[p] != m {
					t.Errorf("%q: mode %v, want %v", p, got[p], m)
				}
			}
			if len(got) != len(want) {
				t.Errorf("extracted %v, want %v", got, want)
			}
			if b, _ := os.ReadFile(filepath.Join(s.target, "bin", "a")); string(b) != "a" {
				t.Errorf("bin/a reads %q", b)
			}
		})
	}
}

func TestExtractTarget(t *testing.T) {
	data := makeTar(t, true, file("a", "a"))
	t.Run("empty existing folder", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := Extract(context.Background(), bytes.NewReader(data), dir, Limits{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("missing parents", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "x", "y")
		if _, err := Extract(context.Background(), bytes.NewReader(data), dir, Limits{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("non-empty folder", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "a"), []byte("keep"), 0o644)
		_, err := Extract(context.Background(), bytes.NewReader(data), dir, Limits{})
		if !errors.Is(err, ErrTargetExists) {
			t.Fatalf("err = %v, want ErrTargetExists", err)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "a")); string(b) != "keep" {
			t.Errorf("existing file changed: %q", b)
		}
	})
	t.Run("file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "f")
		os.WriteFile(f, nil, 0o644)
		if _, err := Extract(context.Background(), bytes.NewReader(data), f, Limits{}); !errors.Is(err, ErrTargetExists) {
			t.Fatalf("err = %v, want ErrTargetExists", err)
		}
	})
}

func TestExtractAtomic(t *testing.T) {
	good := makeTar(t, true, file("a/b", "b"), symlink("l", "a/b"))
	t.Run("success", func(t *testing.T) {
		s := newSandbox(t)
		res, err := ExtractAtomic(context.Background(), bytes.NewReader(good), s.target, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if res != (ExtractResult{Files: 2, Size: 1}) {
			t.Errorf("result %+v", res)
		}
		s.checkContained(t, true)
		fi, err := os.Stat(s.target)
		if err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("target mode %v, %v", fi.Mode(), err)
		}
	})
	t.Run("target exists", func(t *testing.T) {
		s := newSandbox(t)
		os.Mkdir(s.target, 0o755)
		_, err := ExtractAtomic(context.Background(), bytes.NewReader(good), s.target, Limits{})
		if !errors.Is(err, ErrTargetExists) {
			t.Fatalf("err = %v, want ErrTargetExists", err)
		}
		if names := dirNames(t, s.target); len(names) != 0 {
			t.Errorf("target changed: %v", names)
		}
		if names := dirNames(t, s.parent); len(names) != 1 {
			t.Errorf("parent holds %v", names)
		}
	})
	t.Run("failure late in the stream", func(t *testing.T) {
		s := newSandbox(t)
		bad := makeTar(t, true, file("a/b", "b"), file("c", "c"), tEntry{name: "z", typ: tar.TypeFifo})
		_, err := ExtractAtomic(context.Background(), bytes.NewReader(bad), s.target, Limits{})
		if !errors.Is(err, ErrSpecialFile) {
			t.Fatalf("err = %v, want ErrSpecialFile", err)
		}
		s.checkContained(t, false)
	})
	t.Run("canceled", func(t *testing.T) {
		s := newSandbox(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := ExtractAtomic(ctx, bytes.NewReader(good), s.target, Limits{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		s.checkContained(t, false)
	})
	t.Run("relative target", func(t *testing.T) {
		s := newSandbox(t)
		t.Chdir(s.parent)
		if _, err := ExtractAtomic(context.Background(), bytes.NewReader(good), "out", Limits{}); err != nil {
			t.Fatal(err)
		}
		s.checkContained(t, true)
	})
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// TestExtractGzipBomb feeds a few hundred MiB of compressed zeros, generated
// on the fly, and checks that extraction stops soon after the limit, without
// reading the whole stream nor writing past the limit.
func TestExtractGzipBomb(t *testing.T) {
	const (
		bombSize = 512 << 20
		maxSize  = 4 << 20
	)
	zeros := make([]byte, 1<<20)
	tests := []struct {
		name  string
		write func(w io.Writer) error
	}{
		{name: "raw zeros", write: func(w io.Writer) error {
			for range bombSize / len(zeros) {
				if _, err := w.Write(zeros); err != nil {
					return err
				}
			}
			return nil
		}},
		{name: "one huge file", write: func(w io.Writer) error {
			tw := tar.NewWriter(w)
			if err := tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: bombSize}); err != nil {
				return err
			}
			for range bombSize / len(zeros) {
				if _, err := tw.Write(zeros); err != nil {
					return err
				}
			}
			return tw.Close()
		}},
		{name: "many files", write: func(w io.Writer) error {
			tw := tar.NewWriter(w)
			for i := range bombSize / len(zeros) {
				if err := tw.WriteHeader(&tar.Header{Name: "z" + strings.Repeat("0", i%50) + string(rune('a'+i%26)) + string(rune('a'+i/26%26)),
					Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(zeros))}); err != nil {
					return err
				}
				if _, err := tw.Write(zeros); err != nil {
					return err
				}
			}
			return tw.Close()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSandbox(t)
			pr, pw := io.Pipe()
			var fed atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				zw, _ := gzip.NewWriterLevel(pw, gzip.BestSpeed)
				err := tt.write(countingWriter{zw, &fed})
				if err == nil {
					err = zw.Close()
				}
				pw.CloseWithError(err)
			}()
			start := time.Now()
			res, err := Extract(context.Background(), pr, s.target, Limits{MaxSize: maxSize})
			elapsed := time.Since(start)
			pr.CloseWithError(errors.New("test done"))
			<-done
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
			t.Logf("%v after %v, %d MiB fed: %v", res, elapsed, fed.Load()>>20, err)
			if fed.Load() > 64<<20 {
				t.Errorf("read %d MiB of the stream before stopping", fed.Load()>>20)
			}
			if elapsed > 20*time.Second {
				t.Errorf("took %v", elapsed)
			}
			var written int64
			filepath.WalkDir(s.target, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					fi, _ := d.Info()
					written += fi.Size()
				}
				return nil
			})
			if written > maxSize || res.Size > maxSize {
				t.Errorf("wrote %d bytes (result %d), limit %d", written, res.Size, maxSize)
			}
			s.checkContained(t, true)
		})
	}
}

// TestExtractDrains checks that the whole input is consumed on success, so
// a digest-verifying reader wrapping it sees every byte.
func TestExtractDrains(t *testing.T) {
	data := makeTar(t, true, file("a", "a"))
	// Trailing padding inside the gzip stream, as tar tools write.
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(makeTar(t, false, file("a", "a")))
	zw.Write(make([]byte, 10240))
	zw.Close()
	for name, d := range map[string][]byte{"plain": data, "padded": buf.Bytes()} {
		t.Run(name, func(t *testing.T) {
			r := bytes.NewReader(d)
			if _, err := Extract(context.Background(), r, t.TempDir(), Limits{}); err != nil {
				t.Fatal(err)
			}
			if r.Len() != 0 {
				t.Errorf("%d bytes left unread", r.Len())
			}
		})
	}
}

// TestExtractSourceError checks that a failure of the caller's reader is
// reported as itself, not as an invalid archive.
func TestExtractSourceError(t *testing.T) {
	boom := errors.New("connection reset")
	data := makeTar(t, true, file("a", strings.Repeat("abc", 10000)))
	for _, n := range []int{0, 10, len(data) / 2} {
		r := io.MultiReader(bytes.NewReader(data[:n]), iotest.ErrReader(boom))
		_, err := ExtractAtomic(context.Background(), r, filepath.Join(t.TempDir(), "out"), Limits{})
		if !errors.Is(err, boom) || errors.Is(err, ErrInvalidArchive) {
			t.Errorf("after %d bytes: err = %v, want the reader's error only", n, err)
		}
	}
}

func TestExtractAtomicMissingParent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b", "out")
	if _, err := ExtractAtomic(context.Background(), bytes.NewReader(makeTar(t, true, file("x", "x"))), dir, Limits{}); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, filepath.Dir(dir)); len(names) != 1 || names[0] != "out" {
		t.Errorf("parent holds %v", names)
	}
}
