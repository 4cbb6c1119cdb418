//go:build unix

package oci

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive lock on f without waiting; false when
// another holder has it. Closing f releases it.
func lockFile(f *os.File) bool {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil
}
