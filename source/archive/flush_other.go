//go:build !linux

package archive

import "os"

// flushFS syncs every entry: other systems have no syncfs(2).
func flushFS(root *os.Root, names []string) error { return fsyncEach(root, names) }
