package archive

import (
	"iter"
	"os"
	"path/filepath"
	"runtime"
)

// An extraction is made durable as a whole once every file is written,
// rather than file by file: one flush of the file system on Linux
// (syncfs(2): one journal commit and one disk cache flush instead of one
// per file), and on other systems, or when syncfs is not available, one
// fsync per file and folder at the end. syncfs also writes back what other
// processes left dirty on the same file system; on a device that is little
// besides the agent's own writes. [ExtractAtomic] renames the folder only
// after the flush, then syncs the parent folder: a power cut leaves the
// complete folder or none.

// flushTree makes everything written below root durable. names are the
// entries created, for the per-entry fallback. Tests replace it.
var flushTree = flushFS

// fsyncEach syncs the entries names (slash-separated, relative to root;
// symlinks skipped), then the root folder itself.
func fsyncEach(root *os.Root, names iter.Seq[string]) error {
	for n := range names {
		if err := fsyncEntry(root, n); err != nil {
			return err
		}
	}
	return fsyncEntry(root, ".")
}

// fsyncEntry syncs the file or folder n below root; other entries are
// skipped.
func fsyncEntry(root *os.Root, n string) error {
	fi, err := root.Lstat(filepath.FromSlash(n))
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() && !fi.IsDir() {
		return nil
	}
	f, err := root.Open(filepath.FromSlash(n))
	if err != nil {
		return err
	}
	err = ignoreSyncErr(f.Sync())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return ignoreSyncErr(f.Sync())
}

// ignoreSyncErr ignores the errors of platforms that cannot sync folders.
func ignoreSyncErr(err error) error {
	if err != nil && runtime.GOOS == "windows" {
		return nil
	}
	return err
}
