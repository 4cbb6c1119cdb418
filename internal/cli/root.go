// Package cli implements berth's command line: each command parses its flags
// and calls the packages that do the work.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/source/oci"
)

// Version is set at build time with -ldflags "-X ...cli.Version=v1.2.3".
var Version = "dev"

// Main runs berth with args and returns the process exit code. Its agent
// command runs berth-agent (see AgentMain).
func Main(args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	return run(newRoot(g), args, stdout, stderr)
}

// AgentMain runs berth-agent with args: the agent command of berth, with
// the appliers a, as the root command.
func AgentMain(args []string, stdout, stderr io.Writer, a Agent) int {
	g := &globals{stdout: stdout, stderr: stderr}
	return run(newAgentRoot(g, a), args, stdout, stderr)
}

func run(root *cobra.Command, args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		var ee exitError
		if errors.As(err, &ee) && ee.err == nil {
			return ee.code // the command already said what happened
		}
		fmt.Fprintf(stderr, "Error: %v\n", err)
		if errors.As(err, &ee) {
			return ee.code
		}
		return 1
	}
	return 0
}

// exitError carries a specific exit code; a nil err means the command has
// already reported the outcome.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e exitError) Unwrap() error { return e.err }

type globals struct {
	stdout, stderr io.Writer
	output         string
	logLevel       string
	// defaultLevel is the command's log level without --log-level
	// (logLevelAnnotation); "" is warn.
	defaultLevel string
	logFormat    string
	timeout      time.Duration

	dockerConfig string
	caFile       string
	insecure     bool

	log *slog.Logger
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "berth",
		Short: "GitOps for devices, delivered through OCI registries",
		Long: `berth publishes the desired state of devices from Git as signed OCI
artifacts, and keeps devices converged on them.

Publishing (in CI):   berth push ./fleet oci://registry.example.com/fleet/line-3:v1.0.0 --sign-key env://COSIGN_KEY
Checking:             berth verify oci://registry.example.com/fleet/line-3:v1.0.0 --key cosign.pub
Fetching:             berth pull oci://registry.example.com/fleet/line-3:v1.0.0 --key cosign.pub -o ./state`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkRegistryFlags(cmd); err != nil {
				return err
			}
			g.defaultLevel = cmd.Annotations[logLevelAnnotation]
			return g.setup()
		},
	}
	g.register(root)
	root.AddCommand(
		newBuildCmd(g), newPushCmd(g), newSignCmd(g), newVerifyCmd(g), newPullCmd(g),
		newTagCmd(g), newListCmd(g), newDiffCmd(g), newLoginCmd(g), newGenerateKeyCmd(g),
		newAgentExecCmd(g),
		newMirrorCmd(g),
		newBundleCmd(g),
		newMargoCmd(g),
		newRolloutCmd(g), newInhibitCmd(g),
	)
	root.AddCommand(reachesNoRegistry("it talks to the agent's local API, and the agent takes registry settings per source from agent.yaml",
		newStatusCmd(g), newHistoryCmd(g), newReconcileCmd(g), newRollbackCmd(g), newSuspendCmd(g, true), newSuspendCmd(g, false))...)
	root.AddCommand(reachesNoRegistry("it reaches no registry (agent.yaml says insecure: true for a plain-HTTP source)",
		newVersionCmd(g, nil), newInitCmd(g))...)
	usageOnArgErrors(root)
	return root
}

// usageOnArgErrors makes every command's argument errors end with its
// usage line: "accepts 2 arg(s), received 1" alone does not say which.
func usageOnArgErrors(c *cobra.Command) {
	if args := c.Args; args != nil {
		cmd := c
		c.Args = func(cc *cobra.Command, a []string) error {
			if err := args(cc, a); err != nil {
				return fmt.Errorf("%w\nUsage: %s (see %s --help)", err, cmd.UseLine(), cmd.CommandPath())
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		usageOnArgErrors(sub)
	}
}

// newAgentRoot is berth-agent's command tree: the agent command at the
// root, and version.
func newAgentRoot(g *globals, a Agent) *cobra.Command {
	root := newAgentCmd(g, a)
	reachesNoRegistry("the agent takes registry settings per source from agent.yaml: insecure: true (plain HTTP off loopback), caFile, credentials.dockerConfig", root)
	root.Use = "berth-agent --config /etc/berth/agent.yaml"
	root.Example = strings.ReplaceAll(root.Example, "berth agent", "berth-agent")
	root.Long += `

berth-agent is the half of berth that links the appliers; ` + "`berth agent`" + ` runs it.`
	root.Version = Version
	root.SilenceUsage, root.SilenceErrors = true, true
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkRegistryFlags(cmd); err != nil {
			return err
		}
		return g.setup()
	}
	g.register(root)
	root.AddCommand(newVersionCmd(g, a))
	return root
}

// register adds the global flags to root.
func (g *globals) register(root *cobra.Command) {
	pf := root.PersistentFlags()
	pf.StringVar(&g.output, "output", "text", "output format: text or json")
	pf.StringVar(&g.logLevel, "log-level", "", "log level: debug, info, warn or error (default: warn; the agent: its configuration's, info)")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	pf.DurationVar(&g.timeout, "timeout", 5*time.Minute, "time limit for each registry operation")
	pf.StringVar(&g.dockerConfig, "docker-config", "", "Docker config.json with registry credentials (default: $DOCKER_CONFIG/config.json or ~/.docker/config.json)")
	pf.StringVar(&g.caFile, "ca-file", "", "PEM file of CA certificates to trust for the registry, in addition to the system ones")
	pf.BoolVar(&g.insecure, "insecure", false, "talk plain HTTP to the registry (test and lab registries only)")
}

func (g *globals) setup() error {
	if g.output != "text" && g.output != "json" {
		return fmt.Errorf("--output %q: use text or json", g.output)
	}
	// One-shot commands print one summary on stdout: their progress logs
	// stay quiet unless asked for.
	lvl := slog.LevelWarn
	if err := lvl.UnmarshalText([]byte(cmpOr(g.logLevel, cmpOr(g.defaultLevel, "warn")))); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch g.logFormat {
	case "text":
		g.log = slog.New(slog.NewTextHandler(g.stderr, opts))
	case "json":
		g.log = slog.New(slog.NewJSONHandler(g.stderr, opts))
	default:
		return fmt.Errorf("--log-format %q: use text or json", g.logFormat)
	}
	return nil
}

// client builds a registry client from the global flags.
func (g *globals) client() (*oci.Client, error) {
	return oci.NewClient(oci.Options{
		DockerConfig: g.dockerConfig,
		CAFile:       g.caFile,
		Insecure:     g.insecure,
		UserAgent:    "berth/" + Version,
	})
}

// step returns a context bounded by --timeout for one registry operation.
func (g *globals) step(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, g.timeout)
}

// print writes v as JSON with --output json, else calls text.
func (g *globals) print(v any, text func(w io.Writer)) error {
	if g.output == "json" {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	text(g.stdout)
	return nil
}

// noRegistry marks, in a command's Annotations, a command that reaches no
// registry: the global registry flags do not apply to it.
const noRegistry = "berth.dev/no-registry"

// registryFlags are the global flags only registry commands use.
var registryFlags = []string{"insecure", "ca-file", "docker-config"}

// checkRegistryFlags refuses a registry flag given to a command that would
// ignore it: silence would leave the user believing it took effect.
func checkRegistryFlags(cmd *cobra.Command) error {
	why, ok := cmd.Annotations[noRegistry]
	if !ok {
		return nil
	}
	for _, f := range registryFlags {
		if cmd.Flags().Changed(f) {
			return fmt.Errorf("--%s does not apply to %s: %s", f, cmd.CommandPath(), why)
		}
	}
	return nil
}

// reachesNoRegistry annotates cmds as reaching no registry, for the reason
// why, and returns them.
func reachesNoRegistry(why string, cmds ...*cobra.Command) []*cobra.Command {
	for _, c := range cmds {
		if c.Annotations == nil {
			c.Annotations = map[string]string{}
		}
		c.Annotations[noRegistry] = why
	}
	return cmds
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// logLevelAnnotation, in a command's Annotations, is its log level without
// --log-level: info for the commands that run as daemons.
const logLevelAnnotation = "berth.dev/log-level"
