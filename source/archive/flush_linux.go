package archive

import (
	"errors"
	"iter"
	"os"

	"golang.org/x/sys/unix"
)

// flushFS flushes the file system root is on with syncfs(2): every dirty
// page and inode, and the journal, in one call. Since Linux 5.8 it reports
// write-back errors of the file system. Without syncfs (ENOSYS), every
// entry is synced.
func flushFS(root *os.Root, names iter.Seq[string]) error {
	d, err := root.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	err = control(d, "syncfs", unix.Syncfs)
	if errors.Is(err, unix.ENOSYS) {
		return fsyncEach(root, names)
	}
	return err
}

// control runs the system call fn, named name, on the descriptor of f.
func control(f *os.File, name string, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	if ferr != nil {
		return &os.SyscallError{Syscall: name, Err: ferr}
	}
	return nil
}
