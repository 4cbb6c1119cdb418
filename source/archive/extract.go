package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
)

// ExtractResult describes what [Extract] or [ExtractAtomic] wrote.
type ExtractResult struct {
	// Files is the number of regular files and symlinks extracted.
	Files int
	// Size is the total size in bytes of the regular files extracted.
	Size int64
}

// Extract extracts the untrusted tar+gzip stream r (gzip is detected by its
// magic bytes; a plain tar stream is accepted too) into dir, which must not
// exist yet (it is created, with its parents) or be an empty folder.
//
// Every entry is checked before anything is written for it, and refused with
// an error naming it and wrapping one of the package's sentinel errors when
// it is an absolute path or has a ".." component ([ErrUnsafePath]), lies
// below a file or a symlink ([ErrUnsafePath]), is a symlink whose target is
// absolute or leaves dir ([ErrLinkOutside]), a hard link ([ErrHardLink]), a
// device, fifo or unknown type ([ErrSpecialFile]), or a path that an earlier
// entry already created ([ErrDuplicateEntry]). Sizes and counts are bounded
// by lim ([ErrTooLarge], [ErrTooManyFiles]) on the bytes actually read. PAX
// global headers are ignored. All writes go through an [os.Root] opened on
// dir, and files are created exclusively, so nothing is ever written
// outside dir, even through a symlink.
//
// Files get mode 0644, or 0755 when the entry had any execute bit;
// directories 0755. Ownership, times and setuid, setgid and sticky bits are
// never applied. What was extracted is flushed to disk before Extract
// returns without error (one flush of the whole extraction; see flushTree).
//
// After the last entry the rest of r is read (bounded by the limits), so a
// caller verifying a digest of r sees the whole stream, and symlinks are
// checked once more as a whole: a symlink that leaves dir through other
// symlinks of the archive (such as "s -> ." with "t -> s/..") is refused
// ([ErrLinkOutside]) and, like on any other error, removed.
//
// On error, dir is left with whatever was extracted before it; use
// [ExtractAtomic] to get all or nothing.
func Extract(ctx context.Context, r io.Reader, dir string, lim Limits) (ExtractResult, error) {
	if err := prepareTarget(dir); err != nil {
		return ExtractResult{}, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return ExtractResult{}, err
	}
	defer root.Close()
	res, err := extractInto(ctx, r, root, lim)
	if err != nil {
		return res, fmt.Errorf("extracting into %q: %w", dir, err)
	}
	return res, nil
}

// ExtractAtomic is like [Extract], but dir must not exist: the archive is
// extracted into a new sibling folder named dir + ".tmp-<random>", flushed
// to disk, and renamed to dir, then the parent folder is synced: once
// ExtractAtomic returns, a power cut leaves either the complete folder at
// dir or none. On any error the temporary folder is removed and dir is
// not created. Missing parents of dir are created (and left in place on
// error). The target folder gets mode 0755.
//
// The rename is atomic, but a concurrent process creating an empty folder at
// dir between the check and the rename would see it replaced.
func ExtractAtomic(ctx context.Context, r io.Reader, dir string, lim Limits) (res ExtractResult, err error) {
	dir = filepath.Clean(dir)
	if _, err := os.Lstat(dir); err == nil {
		return res, fmt.Errorf("extracting into %q: %w", dir, ErrTargetExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return res, err
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, modeDir); err != nil {
		return res, err
	}
	tmp, err := os.MkdirTemp(parent, filepath.Base(dir)+".tmp-*")
	if err != nil {
		return res, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	// Before extracting: the flush then covers the mode too.
	if err := os.Chmod(tmp, modeDir); err != nil {
		return res, err
	}
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return res, err
	}
	res, err = extractInto(ctx, r, root, lim)
	root.Close()
	if err != nil {
		return res, fmt.Errorf("extracting into %q: %w", dir, err)
	}
	if _, err := os.Lstat(dir); err == nil {
		return res, fmt.Errorf("extracting into %q: %w", dir, ErrTargetExists)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return res, err
	}
	if err := syncDir(parent); err != nil {
		return res, err
	}
	return res, nil
}

// prepareTarget creates dir, or checks that it is an empty folder.
func prepareTarget(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, modeDir); err != nil {
			return err
		}
		return os.Chmod(dir, modeDir)
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("extracting into %q: not a folder: %w", dir, ErrTargetExists)
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Readdirnames(1); err != io.EOF {
		if err != nil {
			return err
		}
		return fmt.Errorf("extracting into %q: folder is not empty: %w", dir, ErrTargetExists)
	}
	return nil
}

func extractInto(ctx context.Context, r io.Reader, root *os.Root, lim Limits) (res ExtractResult, err error) {
	rd, err := newReader(ctx, r, lim)
	if err != nil {
		return res, err
	}
	defer rd.close()
	defer func() {
		if err != nil {
			err = removeEscaping(root, rd, err)
		}
	}()
	w := newFileWriter(root, writeWorkers)
	res, err = extractEntries(rd, root, w)
	if werr := w.wait(); err == nil {
		err = werr
	}
	if err != nil {
		return res, err
	}
	if err := rd.finish(); err != nil {
		return res, err
	}
	if err := flushTree(root, maps.Keys(rd.nodes)); err != nil {
		return res, fmt.Errorf("flushing to disk: %w", err)
	}
	return res, nil
}

// extractEntries creates the entries of rd below root, the files through w.
func extractEntries(rd *reader, root *os.Root, w *fileWriter) (res ExtractResult, err error) {
	for {
		it, err := rd.next()
		if err == io.EOF {
			return res, nil
		}
		if err != nil {
			return res, err
		}
		for _, d := range it.mkdirs {
			if err := mkdir(root, d); err != nil {
				return res, err
			}
		}
		switch it.kind {
		case kindDir:
			if !it.exists {
				if err := mkdir(root, it.name); err != nil {
					return res, err
				}
			}
		case kindSymlink:
			if err := root.Symlink(filepath.FromSlash(it.target), filepath.FromSlash(it.name)); err != nil {
				return res, err
			}
			res.Files++
		case kindFile:
			n, err := w.write(it)
			res.Size += n
			if err != nil {
				return res, err
			}
			res.Files++
		}
	}
}

// removeEscaping removes, after the failure err, the symlinks already
// extracted that lead outside the tree through one another, so that even a
// partial extraction has none.
func removeEscaping(root *os.Root, rd *reader, err error) error {
	escaping, lerr := rd.checkLinks()
	if lerr != nil {
		return errors.Join(err, lerr)
	}
	for _, l := range escaping {
		if rerr := root.Remove(filepath.FromSlash(l)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return errors.Join(err, rerr)
		}
	}
	return err
}

// mkdir creates the directory name with mode 0755 whatever the umask.
func mkdir(root *os.Root, name string) error {
	name = filepath.FromSlash(name)
	if err := root.Mkdir(name, modeDir); err != nil {
		return err
	}
	f, err := root.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%q changed while being extracted", name)
	}
	if fi.Mode().Perm() == modeDir {
		return nil
	}
	return f.Chmod(modeDir)
}
