package deliver

import "golang.org/x/sys/unix"

// diskSpace returns the size of the file system holding dir and the bytes
// free for an unprivileged writer.
func diskSpace(dir string) (total, avail uint64, ok bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, false
	}
	return st.Blocks * uint64(st.Bsize), st.Bavail * uint64(st.Bsize), true
}
