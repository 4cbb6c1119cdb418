// Package memtrim hands memory an idle daemon no longer needs back to the
// device: freed heap, and the pages of its own program that only start-up
// or a rare apply touched.
package memtrim

import "runtime/debug"

// Trim returns freed heap to the operating system and asks the kernel to
// page out the program's read-only code and data pages. Pages the daemon
// uses again fault back in from the page cache or the disk; the ones only
// start-up touched stay out. It is a best effort and never fails.
func Trim() {
	debug.FreeOSMemory()
	pageOutExecutable()
}
