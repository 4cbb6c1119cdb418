package cli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"

	"github.com/spf13/cobra"
)

// AgentBinary is the name of the binary with the appliers.
const AgentBinary = "berth-agent"

// AgentBinEnv, when set, is the path of the berth-agent that `berth agent`
// runs, instead of the one next to berth or on PATH.
const AgentBinEnv = "BERTH_AGENT_BIN"

// newAgentExecCmd is berth's agent command: it runs berth-agent with the
// same arguments, in place of this process (same pid for systemd).
func newAgentExecCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent --config /etc/berth/agent.yaml",
		Short: agentShort,
		Long: agentLong + `

The agent is the binary berth-agent, which links the Compose and Helm
appliers (this binary does not, so that push, pull and the other one-shot
commands start small): berth agent runs the berth-agent installed next to
berth, else the one on PATH, with the same arguments. See berth-agent --help
for its flags (--config, --once, --check-config).`,
		Example: `  berth agent --config /etc/berth/agent.yaml
  berth agent --config /etc/berth/agent.yaml --check-config
  # reconcile every source once and exit non-zero if any failed (scripts, CI)
  berth agent --config ./agent.yaml --once --output json`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if slices.Contains(args, "-h") || slices.Contains(args, "--help") {
				return cmd.Help()
			}
			bin, err := findAgent()
			if err != nil {
				return err
			}
			return execAgent(bin, args)
		},
	}
	return cmd
}

// findAgent returns the berth-agent to run: $BERTH_AGENT_BIN, else the one
// next to this executable, else the one on PATH.
func findAgent() (string, error) {
	if p := os.Getenv(AgentBinEnv); p != "" {
		return p, nil
	}
	if self, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(self), AgentBinary); isExecutable(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath(AgentBinary); err == nil {
		return p, nil
	}
	return "", errors.New("berth agent runs berth-agent, which is neither next to berth nor on PATH: install it (the berth package and release archives carry it; go install github.com/berth-dev/berth/cmd/berth-agent@VERSION)")
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// errExec wraps a failure to start berth-agent.
func errExec(bin string, err error) error {
	return fmt.Errorf("run %s: %w", bin, err)
}
