package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var fuzzLimits = Limits{MaxSize: 1 << 20, MaxFiles: 200}

// fuzzSeeds returns valid archives and a few attacks.
func fuzzSeeds(f *testing.F) [][]byte {
	dir := filepath.Join(f.TempDir(), "tree")
	makeTree(f, dir, goldenTree, permsStd)
	built, _ := build(f, dir, BuildOptions{})
	entries := []tEntry{
		dirEntry("d/"), file("d/a", "a"), symlink("l", "d/a"), symlink("d/up", ".."),
		{name: "x", typ: tar.TypeReg, mode: 0o4777, body: "x"},
	}
	return [][]byte{
		built,
		makeTar(f, false, entries...),
		makeTar(f, true, entries...),
		makeTar(f, false, symlink("link", "."), file("link/x", "x")),
		makeTar(f, false, symlink("s", "."), symlink("t", "s/..")),
		makeTar(f, false, file("../x", "x")),
		makeTar(f, false, tEntry{name: "h", typ: tar.TypeLink, link: "d/a"}),
		lyingHeader(f, "a", 10, bytes.Repeat([]byte("A"), 600)),
	}
}

// FuzzExtract extracts arbitrary bytes: it must never panic, never write
// outside the target, whatever it extracts must be archivable again, and
// Extract, ExtractAtomic and Extract without writer goroutines agree.
func FuzzExtract(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newFastSandbox(t)
		res, err := Extract(context.Background(), bytes.NewReader(data), s.target, fuzzLimits)
		s.checkContained(t, true)
		if err == nil {
			if res.Size > fuzzLimits.MaxSize || res.Files > fuzzLimits.MaxFiles {
				t.Errorf("result %+v over the limits", res)
			}
			_, berr := Build(context.Background(), s.target, io.Discard, BuildOptions{})
			if errors.Is(berr, ErrLinkOutside) || errors.Is(berr, ErrSpecialFile) || errors.Is(berr, ErrUnsafePath) {
				t.Errorf("extracted tree cannot be archived: %v", berr)
			}
		}

		a := newFastSandbox(t)
		ares, aerr := ExtractAtomic(context.Background(), bytes.NewReader(data), a.target, fuzzLimits)
		if (aerr == nil) != (err == nil) || ares != res {
			t.Errorf("Extract = %+v, %v; ExtractAtomic = %+v, %v", res, err, ares, aerr)
		}
		a.checkContained(t, aerr == nil)

		// Writing every file on the reading goroutine gives the same.
		defer func(n int) { writeWorkers = n }(writeWorkers)
		writeWorkers = 0
		i := newFastSandbox(t)
		ires, ierr := Extract(context.Background(), bytes.NewReader(data), i.target, fuzzLimits)
		if (ierr == nil) != (err == nil) || ires != res {
			t.Errorf("with workers: %+v, %v; without: %+v, %v", res, err, ires, ierr)
		}
		i.checkContained(t, true)
	})
}

// FuzzDiff compares a folder with arbitrary bytes: it must never panic and
// return sorted, disjoint lists.
func FuzzDiff(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	dir := filepath.Join(f.TempDir(), "tree")
	makeTree(f, dir, goldenTree, permsStd)
	f.Fuzz(func(t *testing.T, data []byte) {
		ch, err := Diff(context.Background(), dir, bytes.NewReader(data), DiffOptions{Limits: fuzzLimits})
		if err != nil {
			return
		}
		all := slices.Concat(ch.Added, ch.Removed, ch.Modified)
		for _, l := range [][]string{ch.Added, ch.Removed, ch.Modified} {
			if !slices.IsSorted(l) {
				t.Errorf("not sorted: %q", l)
			}
		}
		slices.Sort(all)
		if len(slices.Compact(all)) != len(ch.Added)+len(ch.Removed)+len(ch.Modified) {
			t.Errorf("lists overlap: %+v", ch)
		}
		for _, p := range all {
			if strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || p == "" {
				t.Errorf("bad path %q", p)
			}
		}
	})
}
