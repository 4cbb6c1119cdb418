package archive

import (
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// dirs creates small files with three system calls each (openat, write,
// close; fchmod only when the umask would change the mode), against a
// descriptor of their folder opened once through the os.Root. Through the
// os.Root, a file costs about twelve: the folders of its path are opened
// and closed again, and the new file is registered with the poller, which
// refuses regular files. Thousands of small files made that most of an
// extraction's time.
//
// The folder descriptors are resolved by the os.Root (beneath it, no
// symlink followed), and the file is created with O_EXCL|O_NOFOLLOW, so it
// is as safe as root.OpenFile: never outside the tree, never through or
// over anything already there.
type dirs struct {
	root *os.Root
	mu   sync.Mutex
	fds  map[string]*os.File
}

func newDirs(root *os.Root) *dirs { return &dirs{root: root, fds: map[string]*os.File{}} }

// fd returns the descriptor of the folder dir ("" or "." for the root).
func (d *dirs) fd(dir string) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if f, ok := d.fds[dir]; ok {
		return int(f.Fd()), nil
	}
	name := "."
	if dir != "" {
		name = filepath.FromSlash(dir)
	}
	f, err := d.root.Open(name)
	if err != nil {
		return -1, err
	}
	d.fds[dir] = f
	return int(f.Fd()), nil
}

// create creates the file name exclusively with mode and content data.
func (d *dirs) create(name string, mode int64, data []byte) error {
	dir, base := path.Split(name)
	dfd, err := d.fd(path.Clean(dir))
	if err != nil {
		return err
	}
	perm := uint32(mode) & 0o777 // normMode: 0644 or 0755
	fd, err := unix.Openat(dfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
	if err != nil {
		return &os.PathError{Op: "openat", Path: name, Err: err}
	}
	if err = writeAll(fd, data); err != nil {
		err = &os.PathError{Op: "write", Path: name, Err: err}
	}
	if err == nil && perm&^umask() != perm {
		err = unix.Fchmod(fd, perm)
		if err != nil {
			err = &os.PathError{Op: "fchmod", Path: name, Err: err}
		}
	}
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = &os.PathError{Op: "close", Path: name, Err: cerr}
	}
	return err
}

func writeAll(fd int, data []byte) error {
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// umask is the process's file mode creation mask, read once from
// /proc/self/status (umask(2) cannot read it without setting it, which
// would race with other goroutines creating files). 0777 when unknown:
// every file then gets its fchmod.
var umask = sync.OnceValue(func() uint32 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0o777
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "Umask:"); ok {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
				return uint32(m)
			}
		}
	}
	return 0o777
})

// close closes the folder descriptors.
func (d *dirs) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, f := range d.fds {
		f.Close()
		delete(d.fds, k)
	}
}
