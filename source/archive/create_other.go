//go:build !linux

package archive

import "os"

// dirs creates small files through the os.Root (see create_linux.go for
// the fast path on Linux).
type dirs struct{ root *os.Root }

func newDirs(root *os.Root) *dirs { return &dirs{root: root} }

func (d *dirs) create(name string, mode int64, data []byte) error {
	return createFile(d.root, name, mode, data)
}

func (d *dirs) close() {}
