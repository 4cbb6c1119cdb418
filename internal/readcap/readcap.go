// Package readcap reads small files whole without trusting their size: the
// file must be a regular file, and more than the cap is an error rather
// than a large allocation. It is a leaf: it imports no berth package.
package readcap

import (
	"fmt"
	"io"
	"io/fs"
)

// File reads the regular file name of fsys, refusing more than max bytes
// (it never reads more than max+1). A name that is a directory, device or
// pipe is an error, as is a read error, which names the file.
func File(fsys fs.FS, name string, max int64) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%q is not a regular file", name)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %q: %w", name, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%q is larger than %d bytes", name, max)
	}
	return data, nil
}
