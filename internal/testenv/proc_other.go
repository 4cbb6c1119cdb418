//go:build !unix

package testenv

import (
	"errors"
	"os/exec"
	"syscall"
)

func setProcessGroup(*exec.Cmd) {}

func signalProcessGroup(cmd *exec.Cmd, sig syscall.Signal) error {
	if cmd.Process == nil {
		return errors.New("process not started")
	}
	return cmd.Process.Kill()
}

func killProcessGroup(cmd *exec.Cmd) error { return signalProcessGroup(cmd, syscall.SIGKILL) }

func processAlive(int) bool { return true }
