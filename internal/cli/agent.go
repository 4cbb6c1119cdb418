package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/apply/compose"
	"github.com/berth-dev/berth/apply/helm"
	"github.com/berth-dev/berth/reconcile"
	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/config"
	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/source/mirror"
	"github.com/berth-dev/berth/state"
)

const defaultAgentConfig = "/etc/berth/agent.yaml"

func newAgentCmd(g *globals) *cobra.Command {
	var path string
	var once, check bool
	cmd := &cobra.Command{
		Use:   "agent --config /etc/berth/agent.yaml",
		Short: "Run the device agent: track, verify, fetch, switch and apply revisions",
		Long: `Run the device agent. For every source in the configuration it resolves
the tag, digest or semver range to one digest, verifies that digest's
signature, refuses downgrades, pulls and extracts it beside the current
revision, switches it in atomically and hands it to the appliers.

It serves a local API on a unix socket (status, reconcile, suspend, rollback,
metrics, registry webhooks) that the other device commands use, and tells
systemd when it is ready (Type=notify).`,
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
				fmt.Fprintf(g.stdout, "%s: valid (%d sources)\n", path, len(cfg.Sources))
				return nil
			}
			log := g.agentLogger(cfg)
			appliers, closeAppliers, err := newAppliers(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			defer closeAppliers()
			agent, err := reconcile.New(cfg, reconcile.Options{Appliers: appliers, Log: log, Version: Version})
			if err != nil {
				return err
			}
			if once {
				res := agent.RunOnce(cmd.Context())
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
			return reconcile.Serve(cmd.Context(), agent, cfg, log)
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", defaultAgentConfig, "agent configuration file")
	cmd.Flags().BoolVar(&once, "once", false, "reconcile every source once and exit (non-zero if any failed)")
	cmd.Flags().BoolVar(&check, "check-config", false, "validate the configuration (and that the files it names are usable), then exit")
	return cmd
}

// newAppliers creates the appliers the configuration enables.
func newAppliers(ctx context.Context, cfg *config.Config, log *slog.Logger) ([]reconcile.Applier, func(), error) {
	var out []reconcile.Applier
	closers := []func() error{}
	// Image and chart pulls use the first source credentials given: one
	// Docker config per device is the usual layout.
	var dockerConfig string
	for _, s := range cfg.Sources {
		if s.Credentials.DockerConfig != "" {
			dockerConfig = s.Credentials.DockerConfig
			break
		}
	}
	var registries []mirror.Set
	for _, r := range cfg.Registries {
		registries = append(registries, mirror.Set{Source: r.Source, Mirrors: r.Mirrors, AllowTags: r.AllowTags, SourceFallback: r.SourceFallback})
	}
	if o := cfg.Apply.Compose; o.Enabled {
		ca, err := compose.New(ctx, compose.Options{Host: o.Host, WaitTimeout: o.WaitTimeout, EnvDir: o.EnvDir, DockerConfig: dockerConfig, Registries: registries, Log: log})
		if err != nil {
			return nil, nil, fmt.Errorf("compose applier: %w", err)
		}
		out, closers = append(out, ca), append(closers, ca.Close)
	}
	if o := cfg.Apply.Helm; o.Enabled {
		// Charts usually live in the registry of the sources: trust the
		// first source's CA, and speak plain HTTP when it does.
		var caFile string
		var plainHTTP bool
		for _, s := range cfg.Sources {
			if s.CAFile != "" || s.Insecure {
				caFile, plainHTTP = s.CAFile, s.Insecure
				break
			}
		}
		ha, err := helm.New(helm.Options{Kubeconfig: o.Kubeconfig, ValuesDir: o.ValuesDir, DockerConfig: dockerConfig, CAFile: caFile, PlainHTTP: plainHTTP, Registries: registries, Log: log})
		if err != nil {
			return nil, nil, fmt.Errorf("helm applier: %w", err)
		}
		out = append(out, ha)
	}
	return out, func() {
		for _, c := range closers {
			_ = c()
		}
	}, nil
}

// agentLogger honours the config's log settings over the flags.
func (g *globals) agentLogger(cfg *config.Config) *slog.Logger {
	level, format := g.logLevel, g.logFormat
	if cfg.Log.Level != "" {
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Source, r.Outcome, short(r.Digest), r.Error)
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
				g.log.Warn("no agent is running: showing the recorded state", "stateDir", stateDir)
				st, err = statusFromFile(stateDir)
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

// statusFromFile builds a status from state.json when no agent runs.
func statusFromFile(stateDir string) (*api.Status, error) {
	state, err := store.ReadState(stateDir)
	if err != nil {
		return nil, err
	}
	st := &api.Status{StateDir: stateDir}
	for _, name := range slices.Sorted(maps.Keys(state.Sources)) {
		st.Sources = append(st.Sources, api.SourceStatus{Name: name, SourceState: *state.Sources[name]})
	}
	return st, nil
}

func printStatus(w io.Writer, st *api.Status) {
	live := liveCompose(st)
	liveH := liveHelm(st)
	if len(st.Sources) == 0 {
		fmt.Fprintln(w, "no sources")
		return
	}
	for _, s := range st.Sources {
		fmt.Fprintf(w, "source %s", s.Name)
		if s.URL != "" {
			fmt.Fprintf(w, "  %s (%s, every %s)", s.URL, s.Ref, s.Interval)
		}
		if s.Suspended {
			fmt.Fprint(w, "  SUSPENDED")
		}
		fmt.Fprintln(w)
		if a := s.Applied; a != nil {
			fmt.Fprintf(w, "  applied:  %s", a.Digest)
			if a.Version != "" {
				fmt.Fprintf(w, " (version %s)", a.Version)
			} else if a.Tag != "" {
				fmt.Fprintf(w, " (tag %s)", a.Tag)
			}
			fmt.Fprintf(w, " at %s\n", a.Time.Format(time.RFC3339))
			if r := a.Annotations["org.opencontainers.image.revision"]; r != "" {
				fmt.Fprintf(w, "  revision: %s\n", r)
			}
			if a.Via != nil {
				fmt.Fprintf(w, "  via:      %s\n", describeVia(a.Via))
			}
		} else {
			fmt.Fprintln(w, "  applied:  nothing yet")
		}
		if l := s.Last; l != nil {
			fmt.Fprintf(w, "  last:     %s at %s", l.Outcome, l.Time.Format(time.RFC3339))
			if l.Error != "" {
				fmt.Fprintf(w, ": %s", l.Error)
			}
			fmt.Fprintln(w)
		}
		if !s.NextReconcile.IsZero() {
			fmt.Fprintf(w, "  next:     %s\n", s.NextReconcile.Format(time.RFC3339))
		}
		if s.Applied != nil {
			for _, app := range s.Applied.Apps {
				if app.Kind == "helm" {
					printHelmApp(w, s.Name, app, liveH)
					continue
				}
				printApp(w, s.Name, app, live)
			}
		}
	}
}

// describeVia says where the fetches of a revision came from, grouped:
// "mirror registry.plant.local/acme (manifest, signatures, layer); source (tag)".
func describeVia(v *store.Via) string {
	var order []string
	what := map[string][]string{}
	for _, f := range []struct{ name, via string }{{"tag", v.Tag}, {"manifest", v.Manifest}, {"signatures", v.Signatures}, {"layer", v.Layer}} {
		if f.via == "" {
			continue
		}
		if _, ok := what[f.via]; !ok {
			order = append(order, f.via)
		}
		what[f.via] = append(what[f.via], f.name)
	}
	parts := make([]string, 0, len(order))
	for _, via := range order {
		name := via
		if via != store.ViaSource && via != store.ViaBundle {
			name = "mirror " + via
		}
		parts = append(parts, fmt.Sprintf("%s (%s)", name, strings.Join(what[via], ", ")))
	}
	return strings.Join(parts, "; ")
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
				var state *store.State
				if state, err = store.ReadState(stateDir); err == nil {
					ss, ok := state.Sources[args[0]]
					if !ok {
						return fmt.Errorf("no source %q recorded in %s", args[0], stateDir)
					}
					hist = ss.History
				}
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
	var now bool
	cmd := &cobra.Command{
		Use:   "reconcile --now [SOURCE]",
		Short: "Ask the running agent to reconcile now and wait for the result",
		Example: `  berth reconcile --now            # every source
  berth reconcile --now line-3`,
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
			res, err := api.NewClient(socket).Reconcile(cmd.Context(), name)
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
				err = setSuspended(stateDir, args[0], suspend)
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

func setSuspended(stateDir, name string, suspend bool) error {
	state, err := store.ReadState(stateDir)
	if err != nil {
		return err
	}
	state.Source(name).Suspended = suspend
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return err
	}
	return store.WriteState(stateDir, state)
}

// liveCompose decodes the Compose applier's live report, if any.
func liveCompose(st *api.Status) map[string]compose.ProjectReport {
	raw, ok := st.Appliers["compose"]
	if !ok {
		return nil
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil
	}
	var out map[string]compose.ProjectReport
	if json.Unmarshal(b, &out) != nil {
		return nil
	}
	return out
}

// liveHelm decodes the Helm applier's live report, if any: releases by
// "namespace/name".
func liveHelm(st *api.Status) map[string]helm.ReleaseReport {
	raw, ok := st.Appliers["helm"]
	if !ok {
		return nil
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil
	}
	var out map[string]helm.ReleaseReport
	if json.Unmarshal(b, &out) != nil {
		return nil
	}
	return out
}

// printHelmApp prints one Helm app: its result in the applied revision,
// then its release as it stands now (or as it was applied, without an
// agent): chart, chart digest, revision, status, the last apply result and
// the drift found.
func printHelmApp(w io.Writer, source string, app state.AppStatus, live map[string]helm.ReleaseReport) {
	fmt.Fprintf(w, "  app %s (helm): %s", app.Name, app.Outcome)
	if app.Message != "" {
		fmt.Fprintf(w, ": %s", firstLine(app.Message))
	}
	fmt.Fprintln(w)
	var d helm.Detail
	if len(app.Detail) > 0 {
		_ = json.Unmarshal(app.Detail, &d)
	}
	when := "at apply"
	var rep *helm.ReleaseReport
	for _, k := range slices.Sorted(maps.Keys(live)) {
		if r := live[k]; r.Source == source && r.App == app.Name {
			rep = &r
			break
		}
	}
	if rep != nil && rep.Error == "" {
		d, when = rep.Detail, "now"
	}
	if d.Release == "" {
		return
	}
	fmt.Fprintf(w, "    release %s/%s (%s):", d.Namespace, d.Release, when)
	if d.Revision > 0 {
		fmt.Fprintf(w, " revision %d %s", d.Revision, d.Status)
	} else {
		fmt.Fprint(w, " not installed")
	}
	fmt.Fprintln(w)
	if d.Chart != "" {
		fmt.Fprintf(w, "      chart:  %s %s  %s", d.Chart, d.ChartVersion, d.ChartDigest)
		if d.Mirror != "" {
			fmt.Fprintf(w, " (via mirror %s)", d.Mirror)
		}
		fmt.Fprintln(w)
	}
	for _, nr := range d.NotReady {
		fmt.Fprintf(w, "      not ready: %s\n", nr)
	}
	if rep == nil {
		return
	}
	if rep.Error != "" {
		fmt.Fprintf(w, "      live state unavailable: %s\n", firstLine(rep.Error))
	}
	if l := rep.LastApply; l != nil {
		fmt.Fprintf(w, "      last apply: %s at %s", l.Outcome, l.Time.Format(time.RFC3339))
		if l.Message != "" {
			fmt.Fprintf(w, ": %s", firstLine(l.Message))
		}
		fmt.Fprintln(w)
	}
	if dr := rep.Drift; dr != nil {
		switch {
		case dr.Restores > 0:
			fmt.Fprintf(w, "      drift: %d restores, last %s (%s)", dr.Restores, dr.LastRestore.Format(time.RFC3339), strings.Join(dr.Drifted, "; "))
			if dr.Flapping {
				fmt.Fprint(w, " FLAPPING: restores paused")
			}
			fmt.Fprintln(w)
		case len(dr.Drifted) > 0:
			fmt.Fprintf(w, "      drift: found, not restored (%s)\n", strings.Join(dr.Drifted, "; "))
		case !dr.LastCheck.IsZero():
			fmt.Fprintf(w, "      drift: none (checked %s)\n", dr.LastCheck.Format(time.RFC3339))
		}
		if dr.LastError != "" {
			fmt.Fprintf(w, "      drift error: %s\n", firstLine(dr.LastError))
		}
	}
}

// printApp prints one app: its last apply result and, for Compose apps,
// the services as they run now (or as they were applied, without an agent).
func printApp(w io.Writer, source string, app state.AppStatus, live map[string]compose.ProjectReport) {
	fmt.Fprintf(w, "  app %s (%s): %s", app.Name, app.Kind, app.Outcome)
	if app.Message != "" {
		fmt.Fprintf(w, ": %s", firstLine(app.Message))
	}
	fmt.Fprintln(w)
	detail := app.Detail
	when := "at apply"
	if r, ok := live[compose.ProjectName(source, app.Name)]; ok {
		if len(r.Detail) > 0 {
			detail, when = r.Detail, "now"
		}
		if d := r.Drift; d != nil && d.Restores > 0 {
			fmt.Fprintf(w, "    drift: %d restores, last %s (%s)", d.Restores, d.LastRestore.Format(time.RFC3339), d.LastReason)
			if d.Flapping {
				fmt.Fprint(w, " FLAPPING: restores paused")
			}
			fmt.Fprintln(w)
		}
	}
	var d compose.Detail
	if len(detail) == 0 || json.Unmarshal(detail, &d) != nil {
		return
	}
	fmt.Fprintf(w, "    project %s (%s):\n", d.Project, when)
	for _, svc := range d.Services {
		health := ""
		if svc.Health != "" {
			health = ", " + svc.Health
		}
		via := ""
		if svc.Source != "" {
			via = " (via mirror " + svc.Source + ")"
		}
		fmt.Fprintf(w, "      %s: %s%s  %s%s\n", svc.Name, svc.State, health, svc.Image, via)
	}
}
