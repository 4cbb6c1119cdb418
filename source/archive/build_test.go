package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "update the golden files in testdata/")

// TestBuildGolden checks the entries, modes and uncompressed bytes of the
// archive of a small tree against testdata/build.golden.
func TestBuildGolden(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tree")
	makeTree(t, dir, goldenTree, permsStd)
	data, res := build(t, dir, BuildOptions{})

	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	for _, l := range listing(t, data) {
		fmt.Fprintln(&got, l)
	}
	fmt.Fprintf(&got, "files %d, size %d, tar sha256:%x\n", res.Files, res.Size, sha256.Sum256(raw))

	golden := filepath.Join("testdata", "build.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got.String() != string(want) {
		t.Errorf("archive differs from %s (run with -update if intended):\n got:\n%s\nwant:\n%s", golden, got.String(), want)
	}
	if res.Digest != fmt.Sprintf("sha256:%x", sha256.Sum256(data)) {
		t.Errorf("Digest %s is not the digest of the stream written", res.Digest)
	}

	// No header field depends on the host or the files' metadata.
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Uid != 0 || hdr.Gid != 0 || hdr.Uname != "" || hdr.Gname != "" || !hdr.ModTime.Equal(time.Unix(0, 0)) ||
			!hdr.AccessTime.IsZero() || !hdr.ChangeTime.IsZero() || hdr.Devmajor != 0 || hdr.Devminor != 0 {
			t.Errorf("header %+v", hdr)
		}
		for k := range hdr.PAXRecords {
			if k != "path" {
				t.Errorf("%s: unexpected PAX record %s", hdr.Name, k)
			}
		}
	}

	// The gzip header carries no host data.
	if zr.Header.Name != "" || !zr.Header.ModTime.IsZero() || zr.Header.OS != 255 || zr.Header.Comment != "" {
		t.Errorf("gzip header %+v", zr.Header)
	}
}

// TestBuildReproducible builds the same tree created in different folders
// with different permissions and times and checks the bytes are identical.
func TestBuildReproducible(t *testing.T) {
	ref := filepath.Join(t.TempDir(), "a")
	makeTree(t, ref, goldenTree, permsStd)
	want, wantRes := build(t, ref, BuildOptions{})

	for name, p := range map[string]perms{"strict": permsStrict, "loose": permsLoose, "umask": permsUmask} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "some", "other", "place", name)
			makeTree(t, dir, goldenTree, p)
			got, res := build(t, dir, BuildOptions{})
			if res != wantRes || !bytes.Equal(got, want) {
				t.Errorf("digest %s, want %s", res.Digest, wantRes.Digest)
			}
		})
	}
	t.Run("twice", func(t *testing.T) {
		got, res := build(t, ref, BuildOptions{})
		if res != wantRes || !bytes.Equal(got, want) {
			t.Errorf("digest %s, want %s", res.Digest, wantRes.Digest)
		}
	})
}

func TestBuildIgnore(t *testing.T) {
	tree := []spec{
		{name: ".git/config", body: "x"},
		{name: ".git/objects/aa/bb", body: "x"},
		{name: "a.txt", body: "a"},
		{name: "debug.log", body: "log"},
		{name: "keep.log", body: "log"},
		{name: "build/out", body: "o"},
		{name: "src/build", body: "a file named build"},
		{name: "src/main.go", body: "package main"},
		{name: "src/tmp/x", body: "x"},
		{name: "docs/index.md", body: "d"},
		{name: "src/docs/index.md", body: "d"},
		{name: "vendor/mod/.git", body: "gitdir: x"},
		{name: "vendor/mod/m.go", body: "m"},
		{name: "secret/.git/HEAD", body: "x"},
	}
	tests := []struct {
		name        string
		berthignore string
		ignore      []string
		want        []string
	}{
		{
			name: "git only",
			want: []string{"a.txt", "build/", "build/out", "debug.log", "docs/", "docs/index.md", "keep.log", "secret/",
				"src/", "src/build", "src/docs/", "src/docs/index.md", "src/main.go", "src/tmp/", "src/tmp/x",
				"vendor/", "vendor/mod/", "vendor/mod/m.go"},
		},
		{
			name:        "berthignore with negation and dir pattern",
			berthignore: "# logs\n*.log\n!keep.log\n\nbuild/\n**/tmp\n",
			want: []string{".berthignore", "a.txt", "docs/", "docs/index.md", "keep.log", "secret/",
				"src/", "src/build", "src/docs/", "src/docs/index.md", "src/main.go",
				"vendor/", "vendor/mod/", "vendor/mod/m.go"},
		},
		{
			name:   "opts.Ignore anchored",
			ignore: []string{"/docs", "vendor/", "secret"},
			want: []string{"a.txt", "build/", "build/out", "debug.log", "keep.log",
				"src/", "src/build", "src/docs/", "src/docs/index.md", "src/main.go", "src/tmp/", "src/tmp/x"},
		},
		{
			name:        "opts.Ignore overrides berthignore",
			berthignore: "*.log\nsrc/\n",
			ignore:      []string{"!debug.log", ".berthignore", "docs", "build", "vendor", "secret"},
			want:        []string{"a.txt", "debug.log"},
		},
		{
			name:        "negation cannot re-include below an ignored folder",
			berthignore: "src/\n!src/main.go\n",
			ignore:      []string{"docs", "build", "vendor", "secret", "*.log", ".berthignore"},
			want:        []string{"a.txt"},
		},
		{
			name:        "CRLF ignore file",
			berthignore: "*.log\r\nbuild/\r\n",
			ignore:      []string{"docs", "vendor", "secret", "src", ".berthignore"},
			want:        []string{"a.txt"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			specs := slices.Clone(tree)
			if tt.berthignore != "" {
				specs = append(specs, spec{name: ".berthignore", body: tt.berthignore})
			}
			makeTree(t, dir, specs, permsStd)
			data, _ := build(t, dir, BuildOptions{Ignore: tt.ignore})
			if got := names(t, data); !slices.Equal(got, tt.want) {
				t.Errorf("entries\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestBuildSymlinks(t *testing.T) {
	tests := []struct {
		name    string
		tree    []spec
		ignore  []string
		wantErr error
		errText []string // substrings of the error message
	}{
		{name: "inside file", tree: []spec{{name: "a", body: "a"}, {name: "l", link: "a"}}},
		{name: "inside dir", tree: []spec{{name: "d/a", body: "a"}, {name: "x/l", link: "../d"}}},
		{name: "dot", tree: []spec{{name: "l", link: "."}}},
		{name: "dangling inside", tree: []spec{{name: "l", link: "missing/file"}}},
		{name: "absolute", tree: []spec{{name: "l", link: "/etc"}}, wantErr: ErrLinkOutside, errText: []string{`"l"`, `"/etc"`, "absolute"}},
		{name: "parent", tree: []spec{{name: "sub/l", link: "../../x"}}, wantErr: ErrLinkOutside, errText: []string{`"sub/l"`, `"../../x"`}},
		{name: "lexical through subfolder", tree: []spec{{name: "l", link: "sub/../../x"}}, wantErr: ErrLinkOutside},
		{
			name:    "through another symlink",
			tree:    []spec{{name: "s", link: "."}, {name: "t", link: "s/.."}},
			wantErr: ErrLinkOutside, errText: []string{`"t"`, "through other symlinks"},
		},
		{
			name:    "through an ignored symlink",
			tree:    []spec{{name: "a", link: "b"}, {name: "b", link: "/etc"}},
			ignore:  []string{"b"},
			wantErr: ErrLinkOutside, errText: []string{`"a"`},
		},
		{name: "ignored outside link", tree: []spec{{name: "b", link: "/etc"}}, ignore: []string{"b"}},
		{name: "outside link in .git", tree: []spec{{name: ".git/l", link: "/etc"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			makeTree(t, dir, tt.tree, permsStd)
			var buf bytes.Buffer
			_, err := Build(context.Background(), dir, &buf, BuildOptions{Ignore: tt.ignore})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				for _, s := range tt.errText {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not mention %s", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// Round trip: the links come back identical.
			out := filepath.Join(t.TempDir(), "out")
			if _, err := ExtractAtomic(context.Background(), bytes.NewReader(buf.Bytes()), out, Limits{}); err != nil {
				t.Fatal(err)
			}
			for _, s := range tt.tree {
				if s.link == "" || slices.Contains(tt.ignore, s.name) || strings.HasPrefix(s.name, ".git/") {
					continue
				}
				got, err := os.Readlink(filepath.Join(out, s.name))
				if err != nil || got != s.link {
					t.Errorf("link %s = %q, %v; want %q", s.name, got, err, s.link)
				}
			}
		})
	}
}

func TestBuildOverlay(t *testing.T) {
	tree := []spec{
		{name: "berth.yaml", body: "image: app:latest\n"},
		{name: "run.sh", body: "#!/bin/sh\n", exec: true},
		{name: "compose.yml", link: "berth.yaml"},
		{name: "secret.env", body: "x"},
		{name: "d/f", body: "f"},
	}
	tests := []struct {
		name    string
		overlay map[string][]byte
		want    map[string]string // path -> "mode content"
		wantErr error
	}{
		{
			name:    "replace keeps mode",
			overlay: map[string][]byte{"berth.yaml": []byte("image: app@sha256:aa\n"), "run.sh": []byte("#!/bin/sh\nexit 0\n")},
			want:    map[string]string{"berth.yaml": "-rw-r--r-- image: app@sha256:aa\n", "run.sh": "-rwxr-xr-x #!/bin/sh\nexit 0\n"},
		},
		{
			name:    "add in new folders",
			overlay: map[string][]byte{"new/deep/lock.json": []byte("{}")},
			want:    map[string]string{"new/deep/lock.json": "-rw-r--r-- {}"},
		},
		{
			name:    "replace a symlink",
			overlay: map[string][]byte{"compose.yml": []byte("services: {}\n")},
			want:    map[string]string{"compose.yml": "-rw-r--r-- services: {}\n"},
		},
		{
			name:    "ignored path is added",
			overlay: map[string][]byte{"secret.env": []byte("y")},
			want:    map[string]string{"secret.env": "-rw-r--r-- y"},
		},
		{name: "empty content", overlay: map[string][]byte{"berth.yaml": nil}, want: map[string]string{"berth.yaml": "-rw-r--r-- "}},
		{name: "over a folder", overlay: map[string][]byte{"d": []byte("x")}, wantErr: ErrUnsafePath},
		{name: "below a file", overlay: map[string][]byte{"berth.yaml/x": []byte("x")}, wantErr: ErrUnsafePath},
		{name: "below a symlink", overlay: map[string][]byte{"compose.yml/x": []byte("x")}, wantErr: ErrUnsafePath},
		{name: "dot dot", overlay: map[string][]byte{"../x": []byte("x")}, wantErr: ErrUnsafePath},
		{name: "absolute", overlay: map[string][]byte{"/x": []byte("x")}, wantErr: ErrUnsafePath},
		{name: "unclean", overlay: map[string][]byte{"./x": []byte("x")}, wantErr: ErrUnsafePath},
		{name: "git", overlay: map[string][]byte{".git/config": []byte("x")}, wantErr: ErrUnsafePath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			makeTree(t, dir, tree, permsStd)
			opts := BuildOptions{Overlay: tt.overlay, Ignore: []string{"secret.env"}}
			var buf bytes.Buffer
			res, err := Build(context.Background(), dir, &buf, opts)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// The work tree is untouched.
			if b, _ := os.ReadFile(filepath.Join(dir, "berth.yaml")); string(b) != "image: app:latest\n" {
				t.Errorf("work tree changed: %q", b)
			}
			out := filepath.Join(t.TempDir(), "out")
			eres, err := ExtractAtomic(context.Background(), &buf, out, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if eres.Files != res.Files || eres.Size != res.Size {
				t.Errorf("extracted %+v, built %+v", eres, res)
			}
			for p, want := range tt.want {
				fi, err := os.Lstat(filepath.Join(out, p))
				if err != nil {
					t.Fatal(err)
				}
				b, _ := os.ReadFile(filepath.Join(out, p))
				if got := fi.Mode().String() + " " + string(b); got != want {
					t.Errorf("%s = %q, want %q", p, got, want)
				}
			}
		})
	}
}

// TestBuildExtractRoundTrip extracts an archive and archives the result
// again: the digests match.
func TestBuildExtractRoundTrip(t *testing.T) {
	dir := t.TempDir()
	makeTree(t, dir, goldenTree, permsStd)
	data, res := build(t, dir, BuildOptions{})
	out := filepath.Join(t.TempDir(), "out")
	eres, err := ExtractAtomic(context.Background(), bytes.NewReader(data), out, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if eres.Files != res.Files || eres.Size != res.Size {
		t.Errorf("extracted %+v, built %+v", eres, res)
	}
	_, res2 := build(t, out, BuildOptions{})
	if res2 != res {
		t.Errorf("rebuilt %+v, want %+v", res2, res)
	}
	fi, err := os.Stat(filepath.Join(out, "bin", "run.sh"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("run.sh: %v, %v", fi.Mode(), err)
	}
	fi, err = os.Stat(filepath.Join(out, "empty"))
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
		t.Errorf("empty: %v, %v", fi, err)
	}
}

func TestBuildCanceled(t *testing.T) {
	dir := t.TempDir()
	makeTree(t, dir, goldenTree, permsStd)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Build(ctx, dir, io.Discard, BuildOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestBuildMissingFolder(t *testing.T) {
	if _, err := Build(context.Background(), filepath.Join(t.TempDir(), "nope"), io.Discard, BuildOptions{}); err == nil {
		t.Error("Build of a missing folder succeeded")
	}
}

func TestBuildProgress(t *testing.T) {
	dir := t.TempDir()
	sizes := []int{10, 0, 3000, 7}
	var want int64
	for i, n := range sizes {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), bytes.Repeat([]byte("x"), n), 0o644); err != nil {
			t.Fatal(err)
		}
		want += int64(n)
	}
	var calls [][2]int64
	_, res := build(t, dir, BuildOptions{
		Overlay:  map[string][]byte{"added.txt": []byte("hello")},
		Progress: func(done, total int64) { calls = append(calls, [2]int64{done, total}) },
	})
	want += 5
	if res.Size != want {
		t.Fatalf("Size = %d, want %d", res.Size, want)
	}
	if len(calls) != len(sizes)+1 {
		t.Fatalf("Progress called %d times, want once per file (%d): %v", len(calls), len(sizes)+1, calls)
	}
	var prev int64
	for _, c := range calls {
		if c[1] != want || c[0] < prev || c[0] > c[1] {
			t.Fatalf("Progress calls %v: want done rising to total %d", calls, want)
		}
		prev = c[0]
	}
	if last := calls[len(calls)-1]; last[0] != want {
		t.Fatalf("last Progress call %v, want done = total = %d", last, want)
	}
}
