//go:build !linux

package archive

import (
	"iter"
	"os"
)

// flushFS syncs every entry: other systems have no syncfs(2).
func flushFS(root *os.Root, names iter.Seq[string]) error { return fsyncEach(root, names) }
