// Command berth-agent is berth's device agent with the Compose and Helm
// appliers linked in (build tags berth_nocompose and berth_nohelm leave one
// out). `berth agent` runs it.
package main

import (
	"os"

	"github.com/berth-dev/berth/internal/agentrun"
	"github.com/berth-dev/berth/internal/cli"
)

func main() {
	os.Exit(cli.AgentMain(os.Args[1:], os.Stdout, os.Stderr, agentrun.Runner{Version: cli.Version}))
}
