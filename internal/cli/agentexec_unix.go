//go:build unix

package cli

import (
	"os"
	"syscall"
)

// execAgent replaces this process with berth-agent: systemd keeps watching
// the same pid, and signals reach the agent directly.
func execAgent(bin string, args []string) error {
	return errExec(bin, syscall.Exec(bin, append([]string{bin}, args...), os.Environ()))
}
