//go:build !unix

package cli

import (
	"errors"
	"os"
	"os/exec"
)

// execAgent runs berth-agent as a child and exits with its status.
func execAgent(bin string, args []string) error {
	cmd := exec.Command(bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return exitError{code: ee.ExitCode()}
	}
	if err != nil {
		return errExec(bin, err)
	}
	return nil
}
