package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/config"
	"github.com/berth-dev/berth/reconcile/store"
)

const defaultAgentConfig = "/etc/berth/agent.yaml"

// Agent runs the device agent with the appliers linked into the binary
// (package agentrun, in cmd/berth-agent). cmd/berth has none: its `agent`
// command runs berth-agent instead, so that its one-shot commands do not
// pay for the Compose and Helm SDKs.
type Agent interface {
	// Once reconciles every source once.
	Once(ctx context.Context, cfg *config.Config, log *slog.Logger) ([]api.ReconcileResult, error)
	// Serve runs the agent until ctx ends.
	Serve(ctx context.Context, cfg *config.Config, log *slog.Logger) error
	// Appliers names the appliers linked in.
	Appliers() []string
	// Probe warns of each enabled applier whose Docker Engine or
	// kube-apiserver does not answer.
	Probe(ctx context.Context, cfg *config.Config) []string
}

const agentShort = "Run the device agent: track, verify, fetch, switch and apply revisions"

const agentLong = `Run the device agent. For every source in the configuration it resolves
the tag, digest or semver range to one digest, verifies that digest's
signature, refuses downgrades, pulls and extracts it beside the current
revision, switches it in atomically and hands it to the appliers.

It serves a local API on a unix socket (status, reconcile, suspend, rollback,
metrics, registry webhooks) that the other device commands use, and tells
systemd when it is ready (Type=notify).`

func newAgentCmd(g *globals, a Agent) *cobra.Command {
	var path string
	var once, check bool
	cmd := &cobra.Command{
		Use:   "agent --config /etc/berth/agent.yaml",
		Short: agentShort,
		Long:  agentLong,
		Example: `  berth agent --config /etc/berth/agent.yaml
  berth agent --config /etc/berth/agent.yaml --check-config
  # reconcile every source once and exit non-zero if any failed (scripts, CI)
  berth agent --config ./agent.yaml --once --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(path)
			if err != nil {
				return err
			}
			if check {
				if err := cfg.Check(); err != nil {
					return err
				}
				warnings := []string{}
				if a != nil {
					warnings = append(warnings, a.Probe(cmd.Context(), cfg)...)
				}
				dev, _ := cfg.Device.Identity() // Check refuses a device without one
				if dev.Labels == nil {
					dev.Labels = map[string]string{}
				}
				out := map[string]any{"config": path, "valid": true, "sources": len(cfg.Sources), "warnings": warnings,
					"device": map[string]any{"id": dev.ID, "labels": dev.Labels}}
				return g.print(out, func(w io.Writer) {
					fmt.Fprintf(w, "%s: valid (%d sources; device %s%s)\n", path, len(cfg.Sources), dev.ID, formatLabels(dev.Labels))
					for _, wn := range warnings {
						fmt.Fprintf(g.stderr, "warning: %s\n", wn)
					}
				})
			}
			log := g.agentLogger(cfg, once)
			if once {
				res, err := a.Once(cmd.Context(), cfg, log)
				if err != nil {
					return err
				}
				failed := 0
				for _, r := range res {
					if r.Failed() {
						failed++
					}
				}
				if err := g.print(res, func(w io.Writer) { printResults(w, res) }); err != nil {
					return err
				}
				if failed > 0 {
					return exitError{code: 1, err: fmt.Errorf("%d of %d sources failed to reconcile", failed, len(res))}
				}
				return nil
			}
			return a.Serve(cmd.Context(), cfg, log)
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", defaultAgentConfig, "agent configuration file")
	cmd.Flags().BoolVar(&once, "once", false, "reconcile every source once and exit (non-zero if any failed)")
	cmd.Flags().BoolVar(&check, "check-config", false, "validate the configuration (and that the files it names are usable), then exit")
	return cmd
}

// agentLogger takes --log-level, else the config's level; the config's format
// over --log-format.
// With --once, the results table says what failed: the logs stay at
// errors unless --log-level says otherwise.
func (g *globals) agentLogger(cfg *config.Config, once bool) *slog.Logger {
	level, format := g.logLevel, g.logFormat
	switch {
	case once && level == "":
		level = "error"
	case level == "" && cfg.Log.Level != "":
		level = cfg.Log.Level
	}
	if cfg.Log.Format != "" {
		format = cfg.Log.Format
	}
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(g.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(g.stderr, opts))
}

func printResults(w io.Writer, res []api.ReconcileResult) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tOUTCOME\tDIGEST\tERROR")
	for _, r := range res {
		msg := r.Error
		if msg == "" {
			msg = r.Message
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Source, r.Outcome, short(r.Digest), msg)
	}
	tw.Flush()
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

// deviceFlags locate the agent for the device commands.
type deviceFlags struct {
	config   string
	stateDir string
	socket   string
}

func (d *deviceFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&d.config, "config", "c", defaultAgentConfig, "agent configuration file (to find the state folder and socket)")
	cmd.Flags().StringVar(&d.stateDir, "state-dir", "", "the agent's state folder (default: from the config, else /var/lib/berth)")
	cmd.Flags().StringVar(&d.socket, "socket", "", "the agent's API socket (default: <state-dir>/berth.sock)")
}

// locate returns the state folder and socket.
func (d *deviceFlags) locate() (stateDir, socket string, err error) {
	stateDir, socket = d.stateDir, d.socket
	cfg, err := config.Load(d.config)
	switch {
	case err == nil:
		if stateDir == "" {
			stateDir = cfg.StateDir
		}
		if socket == "" {
			socket = cfg.Socket
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return "", "", err
	}
	if stateDir == "" {
		stateDir = config.DefaultStateDir
	}
	if socket == "" {
		socket = filepath.Join(stateDir, "berth.sock")
	}
	return stateDir, socket, nil
}

func newStatusCmd(g *globals) *cobra.Command {
	var d deviceFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what the agent applied for each source, and how the last reconcile went",
		Example: `  berth status
  berth status --output json | jq '.sources[].applied.digest'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			stateDir, socket, err := d.locate()
			if err != nil {
				return err
			}
			st, err := api.NewClient(socket).Status(cmd.Context())
			if errors.Is(err, api.ErrNoAgent) {
				if !recorded(stateDir) {
					return d.nothingHere(stateDir, socket)
				}
				g.log.Warn("no agent is running: showing the recorded state", "stateDir", stateDir)
				st, err = api.Offline{StateDir: stateDir}.Status()
			}
			if err != nil {
				return err
			}
			return g.print(st, func(w io.Writer) { printStatus(w, st) })
		},
	}
	d.register(cmd)
	return cmd
}

func newHistoryCmd(g *globals) *cobra.Command {
	var d deviceFlags
	cmd := &cobra.Command{
		Use:   "history SOURCE",
		Short: "List the revisions a source switched to or refused, newest first",
		Example: `  berth history line-3
  berth history line-3 --output json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			stateDir, socket, err := d.locate()
			if err != nil {
				return err
			}
			hist, err := api.NewClient(socket).History(cmd.Context(), args[0])
			if errors.Is(err, api.ErrNoAgent) {
				hist, err = api.Offline{StateDir: stateDir}.History(args[0])
			}
			if err != nil {
				return err
			}
			if hist == nil {
				hist = []store.Revision{}
			}
			return g.print(hist, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TIME\tOUTCOME\tDIGEST\tVERSION/TAG\tREVISION\tERROR")
				for _, r := range hist {
					vt := r.Version
					if vt == "" {
						vt = r.Tag
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.Format(time.RFC3339), r.Outcome, short(r.Digest), vt,
						r.Annotations["org.opencontainers.image.revision"], firstLine(r.Error))
				}
				tw.Flush()
			})
		},
	}
	d.register(cmd)
	return cmd
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func newReconcileCmd(g *globals) *cobra.Command {
	var d deviceFlags
	var now, ignoreWindows bool
	cmd := &cobra.Command{
		Use:   "reconcile --now [--ignore-windows] [SOURCE]",
		Short: "Ask the running agent to reconcile now and wait for the result",
		Long: `Ask the running agent to reconcile now and wait for the result.

A new revision is still held back by its rollout plan (the device's wave,
signed pause and abort statements) and by inhibitors; with --ignore-windows
it is switched in and applied even outside the update windows (and
downloaded outside the download windows), for a technician on site.`,
		Example: `  berth reconcile --now            # every source
  berth reconcile --now line-3
  # on site, outside the night's apply window:
  berth reconcile --now --ignore-windows line-3`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !now {
				return fmt.Errorf("pass --now to reconcile immediately (the agent reconciles on its interval otherwise)")
			}
			_, socket, err := d.locate()
			if err != nil {
				return err
			}
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			res, err := api.NewClient(socket).Reconcile(cmd.Context(), name, api.ReconcileOptions{IgnoreWindows: ignoreWindows})
			if errors.Is(err, api.ErrNoAgent) {
				return fmt.Errorf("%w: start it (systemctl start berth) or run `berth agent --once`", err)
			}
			if err != nil {
				return err
			}
			if err := g.print(res, func(w io.Writer) { printResults(w, res) }); err != nil {
				return err
			}
			for _, r := range res {
				if r.Failed() {
					return exitError{code: 1}
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&now, "now", false, "reconcile immediately")
	cmd.Flags().BoolVar(&ignoreWindows, "ignore-windows", false, "switch and apply even outside the update windows (rollout waves, statements and inhibitors still apply)")
	d.register(cmd)
	return cmd
}

func newRollbackCmd(g *globals) *cobra.Command {
	var d deviceFlags
	var to string
	cmd := &cobra.Command{
		Use:   "rollback SOURCE [--to DIGEST]",
		Short: "Apply an earlier revision again (verified again) and suspend the source there",
		Long: `Apply the previous applied revision of SOURCE, or the one given with --to,
bypassing the downgrade check. Its signature is verified again. The source is
then suspended so the next poll does not move it forward: run
'berth resume SOURCE' once a fixed revision is published.`,
		Example: `  berth rollback line-3
  berth rollback line-3 --to sha256:4acbfe51243ddc3f4baf42fbe490a9cddb62df15b6ee601f9c256f22ce985f1d`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, socket, err := d.locate()
			if err != nil {
				return err
			}
			res, err := api.NewClient(socket).Rollback(cmd.Context(), args[0], to)
			if errors.Is(err, api.ErrNoAgent) {
				return fmt.Errorf("%w: rollback needs the running agent (systemctl start berth)", err)
			}
			if err != nil {
				return err
			}
			if err := g.print(res, func(w io.Writer) {
				if res.Error == "" {
					fmt.Fprintf(w, "rolled %s back to %s; the source is suspended: `berth resume %s` to track it again\n", res.Source, res.Digest, res.Source)
				}
			}); err != nil {
				return err
			}
			if res.Error != "" {
				return fmt.Errorf("rollback of %s to %s failed: %s", res.Source, res.Digest, res.Error)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "digest to roll back to (default: the previous applied revision)")
	d.register(cmd)
	return cmd
}

func newSuspendCmd(g *globals, suspend bool) *cobra.Command {
	var d deviceFlags
	use, short, verb := "suspend SOURCE", "Stop reconciling a source (what runs keeps running)", "suspended"
	example := "  berth suspend line-3"
	if !suspend {
		use, short, verb = "resume SOURCE", "Reconcile a suspended source again, starting now", "resumed"
		example = "  berth resume line-3"
	}
	cmd := &cobra.Command{
		Use:     use,
		Short:   short,
		Example: example,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			stateDir, socket, err := d.locate()
			if err != nil {
				return err
			}
			c := api.NewClient(socket)
			if suspend {
				err = c.Suspend(cmd.Context(), args[0])
			} else {
				err = c.Resume(cmd.Context(), args[0])
			}
			if errors.Is(err, api.ErrNoAgent) {
				// No agent: record the choice; the agent honours it at start.
				err = api.Offline{StateDir: stateDir}.Suspend(args[0], suspend)
			}
			if err != nil {
				return err
			}
			return g.print(map[string]any{"source": args[0], "suspended": suspend}, func(w io.Writer) {
				fmt.Fprintf(w, "%s %s\n", args[0], verb)
			})
		},
	}
	d.register(cmd)
	return cmd
}

// recorded reports whether an agent ever recorded state in stateDir.
func recorded(stateDir string) bool {
	_, err := os.Stat(filepath.Join(stateDir, store.StateFile))
	return err == nil
}

// nothingHere says where the device commands looked for an agent and found
// none: no answer on the socket, no state.json, and whether the
// configuration was found.
func (d *deviceFlags) nothingHere(stateDir, socket string) error {
	cfgNote := "config " + d.config
	if _, err := os.Stat(d.config); err != nil {
		cfgNote += " is missing"
	} else {
		cfgNote += " was read"
	}
	return fmt.Errorf("no agent answers on %s and none has recorded state in %s (no %s there); %s: start the agent (systemctl start berth-agent, or berth agent --config FILE), or point at it with --config, --state-dir or --socket",
		socket, stateDir, store.StateFile, cfgNote)
}
