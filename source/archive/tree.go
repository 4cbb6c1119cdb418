package archive

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/go-git/go-git/v5/plumbing/format/gitignore"
)

// IgnoreFile is the name of the file, at the top of the folder, whose
// gitignore-syntax patterns [Build] and [Diff] leave out of the archive.
// Only the top-level file is read; files of this name in subfolders are
// archived like any other.
const IgnoreFile = ".berthignore"

// gitDir is always left out, at any depth (repositories and submodules).
const gitDir = ".git"

// Normalised modes.
const (
	modeDir     = 0o755
	modeFile    = 0o644
	modeExec    = 0o755
	modeSymlink = 0o777
)

// kind is the type of a tree or archive entry.
type kind uint8

const (
	kindDir kind = iota + 1
	kindFile
	kindSymlink
)

func (k kind) String() string {
	switch k {
	case kindDir:
		return "directory"
	case kindFile:
		return "file"
	case kindSymlink:
		return "symlink"
	}
	return "unknown"
}

// BuildOptions configures [Build] and the folder side of [Diff].
type BuildOptions struct {
	// Ignore holds extra gitignore-syntax patterns, relative to the top of
	// the folder, applied after (and so overriding) those of [IgnoreFile].
	// Like Flux's --ignore-paths.
	Ignore []string

	// Overlay maps clean, relative, slash-separated paths to contents that
	// replace the file at that path, or add it when it does not exist or is
	// ignored, without touching the folder. A replaced file keeps its
	// normalised mode; a new file, or one replacing a symlink, is 0644.
	// Missing parent directories are added. Overlay paths are never
	// ignored, but may not lie below a ".git" component, a file or a
	// symlink, nor replace a directory.
	Overlay map[string][]byte

	// Progress, when set, is called after each file is packed with the
	// bytes of file contents packed so far and the total to pack, so a
	// large push can show "packing" before its upload starts.
	Progress func(done, total int64)
}

// entry is one node of the tree to archive.
type entry struct {
	name    string // slash-separated, relative, no trailing slash
	kind    kind
	mode    int64 // normalised permission bits
	size    int64 // regular files only
	target  string
	overlay bool   // content comes from data, not from the folder
	data    []byte // overlay content
}

// tarName is the entry name in the archive: directories end with "/".
func (e *entry) tarName() string {
	if e.kind == kindDir {
		return e.name + "/"
	}
	return e.name
}

// tree is the list of entries Build writes for a folder. Build and Diff both
// get theirs from openTree, so they always agree on what is archived.
type tree struct {
	root    *os.Root
	entries []entry // sorted by tarName
}

func (t *tree) close() error { return t.root.Close() }

// open returns the content of the regular file e.
func (t *tree) open(e *entry) (io.ReadCloser, error) {
	if e.overlay {
		return io.NopCloser(bytes.NewReader(e.data)), nil
	}
	f, err := t.root.Open(filepath.FromSlash(e.name))
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() != e.size {
		f.Close()
		return nil, fmt.Errorf("path %q changed while being archived", e.name)
	}
	return &exactReader{f: f, r: io.LimitReader(f, e.size), name: e.name, left: e.size}, nil
}

// exactReader returns exactly the size recorded during the walk, or an error.
type exactReader struct {
	f    *os.File
	r    io.Reader
	name string
	left int64
}

func (r *exactReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.left -= int64(n)
	if err == io.EOF && r.left != 0 {
		return n, fmt.Errorf("path %q changed while being archived", r.name)
	}
	return n, err
}

func (r *exactReader) Close() error { return r.f.Close() }

// openTree walks dir and returns the sorted entries that Build writes for it
// with opts. The caller closes the tree.
func openTree(ctx context.Context, dir string, opts BuildOptions) (_ *tree, err error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			root.Close()
		}
	}()

	m, err := ignoreMatcher(root, opts.Ignore)
	if err != nil {
		return nil, err
	}
	lookup := rootLookup(root)

	var entries []entry
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		isDir := d.IsDir()
		if d.Name() == gitDir || m.Match(strings.Split(p, "/"), isDir) {
			if isDir {
				return fs.SkipDir
			}
			return nil
		}
		typ := d.Type()
		switch {
		case isDir:
			entries = append(entries, entry{name: p, kind: kindDir, mode: modeDir})
		case typ.IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			entries = append(entries, entry{name: p, kind: kindFile, mode: normMode(int64(fi.Mode().Perm())), size: fi.Size()})
		case typ&fs.ModeSymlink != 0:
			target, err := root.Readlink(filepath.FromSlash(p))
			if err != nil {
				return err
			}
			target = filepath.ToSlash(target)
			if why := lexicalLinkCheck(p, target); why != "" {
				return refusePath(p, fmt.Sprintf("symlink target %q %s", target, why), ErrLinkOutside)
			}
			out, err := linkEscapes(lookup, p, target)
			if err != nil {
				return err
			}
			if out {
				return refusePath(p, fmt.Sprintf("symlink target %q resolves outside the folder through other symlinks", target), ErrLinkOutside)
			}
			entries = append(entries, entry{name: p, kind: kindSymlink, mode: modeSymlink, target: target})
		default:
			return refusePath(p, fmt.Sprintf("file type %v", typ), ErrSpecialFile)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if entries, err = applyOverlay(entries, opts.Overlay); err != nil {
		return nil, err
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.tarName(), b.tarName()) })
	return &tree{root: root, entries: entries}, nil
}

// normMode maps permission bits to 0755 when any execute bit is set and to
// 0644 otherwise.
func normMode(perm int64) int64 {
	if perm&0o111 != 0 {
		return modeExec
	}
	return modeFile
}

// ignoreMatcher reads IgnoreFile at the top of root and appends extra.
func ignoreMatcher(root *os.Root, extra []string) (gitignore.Matcher, error) {
	var ps []gitignore.Pattern
	data, err := root.ReadFile(IgnoreFile)
	switch {
	case err == nil:
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, len(data)+1)
		for sc.Scan() {
			if p, ok := ignoreLine(sc.Text()); ok {
				ps = append(ps, gitignore.ParsePattern(p, nil))
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("reading %s: %w", IgnoreFile, err)
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return nil, fmt.Errorf("reading %s: %w", IgnoreFile, err)
	}
	for _, p := range extra {
		if p, ok := ignoreLine(p); ok {
			ps = append(ps, gitignore.ParsePattern(p, nil))
		}
	}
	return gitignore.NewMatcher(ps), nil
}

// ignoreLine strips a line of an ignore file; ok is false for blank lines and
// comments.
func ignoreLine(s string) (string, bool) {
	s = strings.TrimSuffix(s, "\r")
	if strings.TrimSpace(s) == "" || strings.HasPrefix(s, "#") {
		return "", false
	}
	return s, true
}

// applyOverlay replaces or adds the overlay files in entries.
func applyOverlay(entries []entry, overlay map[string][]byte) ([]entry, error) {
	if len(overlay) == 0 {
		return entries, nil
	}
	index := make(map[string]int, len(entries))
	for i, e := range entries {
		index[e.name] = i
	}
	for _, name := range slices.Sorted(maps.Keys(overlay)) {
		data := overlay[name]
		if name == "" || name == "." || path.Clean(name) != name || path.IsAbs(name) ||
			!filepath.IsLocal(filepath.FromSlash(name)) || strings.Contains(name, `\`) {
			return nil, fmt.Errorf("overlay path %q: not a clean relative slash-separated path: %w", name, ErrUnsafePath)
		}
		parts := strings.Split(name, "/")
		if slices.Contains(parts, gitDir) {
			return nil, fmt.Errorf("overlay path %q: below %s: %w", name, gitDir, ErrUnsafePath)
		}
		for i := 1; i < len(parts); i++ {
			parent := strings.Join(parts[:i], "/")
			j, ok := index[parent]
			if !ok {
				index[parent] = len(entries)
				entries = append(entries, entry{name: parent, kind: kindDir, mode: modeDir})
				continue
			}
			if entries[j].kind != kindDir {
				return nil, fmt.Errorf("overlay path %q: parent %q is a %s: %w", name, parent, entries[j].kind, ErrUnsafePath)
			}
		}
		e := entry{name: name, kind: kindFile, mode: modeFile, size: int64(len(data)), overlay: true, data: data}
		j, ok := index[name]
		if !ok {
			index[name] = len(entries)
			entries = append(entries, e)
			continue
		}
		switch entries[j].kind {
		case kindDir:
			return nil, fmt.Errorf("overlay path %q: is a directory in the folder: %w", name, ErrUnsafePath)
		case kindFile:
			e.mode = entries[j].mode
		}
		entries[j] = e
	}
	return entries, nil
}

// isAbsTarget reports whether a symlink target is absolute on any platform.
func isAbsTarget(target string) bool {
	return strings.HasPrefix(target, "/") || strings.HasPrefix(target, `\`) ||
		filepath.IsAbs(target) || filepath.VolumeName(target) != ""
}

// lexicalLinkCheck returns why the symlink at name (slash-separated) with the
// slash-separated target leaves the folder when resolved lexically from the
// link's folder, or "" when it stays inside.
func lexicalLinkCheck(name, target string) string {
	switch {
	case target == "":
		return "is empty"
	case strings.ContainsRune(target, 0):
		return "contains a NUL byte"
	case isAbsTarget(target):
		return "is absolute"
	case leaves(path.Join(path.Dir(name), target)):
		return "leaves the folder"
	}
	return ""
}

// leaves reports whether the clean slash-separated path p is outside ".".
func leaves(p string) bool {
	return p == ".." || strings.HasPrefix(p, "../")
}

// lookupFunc describes the entry at the slash-separated relative path rel:
// its kind, its target for symlinks, and ok false when nothing exists there.
type lookupFunc func(rel string) (k kind, target string, ok bool, err error)

// maxLinkHops bounds symlink resolution. It is above every kernel's limit
// (40 on Linux), so a chain this long cannot be followed by anyone.
const maxLinkHops = 255

// linkEscapes reports whether following the symlink at rel, whose parent
// directories are real directories, with target, leaves the tree the way a
// kernel resolving it would: every symlink met on the way is followed, and
// ".." after a symlink applies to where the symlink led. A path that stops
// existing part way (a dangling link) is judged lexically from there on.
func linkEscapes(lookup lookupFunc, rel, target string) (bool, error) {
	if isAbsTarget(target) {
		return true, nil
	}
	var stack []string
	if d := path.Dir(rel); d != "." {
		stack = strings.Split(d, "/")
	}
	todo := strings.Split(target, "/")
	hops := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return true, nil
			}
			stack = stack[:len(stack)-1]
			continue
		}
		stack = append(stack, c)
		k, t, ok, err := lookup(strings.Join(stack, "/"))
		if err != nil {
			return false, err
		}
		if !ok {
			rest := path.Clean(strings.Join(append(stack, todo...), "/"))
			return leaves(rest), nil
		}
		if k != kindSymlink {
			continue
		}
		if hops++; hops > maxLinkHops {
			return false, nil
		}
		if isAbsTarget(t) {
			return true, nil
		}
		stack = stack[:len(stack)-1]
		todo = append(strings.Split(t, "/"), todo...)
	}
	return false, nil
}

// rootLookup is a lookupFunc for the real file system below root.
func rootLookup(root *os.Root) lookupFunc {
	return func(rel string) (kind, string, bool, error) {
		name := filepath.FromSlash(rel)
		fi, err := root.Lstat(name)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				return 0, "", false, nil
			}
			return 0, "", false, err
		}
		switch m := fi.Mode(); {
		case m.IsDir():
			return kindDir, "", true, nil
		case m&fs.ModeSymlink != 0:
			t, err := root.Readlink(name)
			if err != nil {
				return 0, "", false, err
			}
			return kindSymlink, filepath.ToSlash(t), true, nil
		default:
			return kindFile, "", true, nil
		}
	}
}
