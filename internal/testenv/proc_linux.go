//go:build linux

package testenv

import "syscall"

// setParentDeathSignal has the kernel kill the child if the test process
// dies without running its cleanups (a panic, a test timeout).
func setParentDeathSignal(attr *syscall.SysProcAttr) {
	attr.Pdeathsig = syscall.SIGKILL
}
