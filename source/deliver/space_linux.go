package deliver

import (
	"path/filepath"

	"golang.org/x/sys/unix"
)

// diskSpace returns the size of the file system holding dir and the bytes
// free for an unprivileged writer.
//
// A folder that does not exist yet is measured at its nearest existing
// parent: the file system it will be created on.
func diskSpace(dir string) (total, avail uint64, ok bool) {
	var st unix.Statfs_t
	for {
		err := unix.Statfs(dir, &st)
		if err == nil {
			return st.Blocks * uint64(st.Bsize), st.Bavail * uint64(st.Bsize), true
		}
		parent := filepath.Dir(dir)
		if err != unix.ENOENT || parent == dir {
			return 0, 0, false
		}
		dir = parent
	}
}
