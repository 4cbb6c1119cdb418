package cli

import (
	"errors"
	"fmt"
	"io"
	"os/user"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/policy/inhibit"
	"github.com/berth-dev/berth/reconcile/api"
)

// inhibitResult is what inhibit prints when it sets or releases.
type inhibitResult struct {
	inhibit.Inhibitor
	Released *bool `json:"released,omitempty"`
}

func newInhibitCmd(g *globals) *cobra.Command {
	var d deviceFlags
	var dur time.Duration
	var reason string
	var release bool
	cmd := &cobra.Command{
		Use:   "inhibit [APP --for DURATION --reason TEXT | --release APP]",
		Short: "Hold off the updates of an app for a while (or list who does)",
		Long: `Ask the agent not to switch to, or apply, a new revision that concerns APP
until DURATION has passed, say because it is finishing a batch. Without
arguments, list the inhibitors that hold now.

Inhibitors are files in <stateDir>/inhibit/<app>.json: this command asks the
running agent, or writes the file itself when no agent runs. An app in a
container can write the file too, in a mounted folder:
  {"until": "2026-12-08T14:30:00Z", "reason": "batch 4711", "by": "mes"}
An expired inhibitor holds nothing; none holds more than a week after it was
written.`,
		Example: `  berth inhibit press --for 30m --reason "batch 4711 running"
  berth inhibit --release press
  berth inhibit --output json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			stateDir, socket, err := d.locate()
			if err != nil {
				return err
			}
			c := api.NewClient(socket)
			store := inhibit.Open(inhibit.Dir(stateDir))
			switch {
			case len(args) == 0 && !release:
				return g.listInhibitors(cmd, c, store)
			case len(args) == 0:
				return errors.New("--release needs the app: berth inhibit --release APP")
			case release:
				ok, err := c.Release(cmd.Context(), args[0])
				if errors.Is(err, api.ErrNoAgent) {
					g.log.Warn("no agent is running: removing the inhibitor file", "dir", store.Dir())
					ok, err = store.Release(args[0])
				}
				if err != nil {
					return err
				}
				return g.print(inhibitResult{Inhibitor: inhibit.Inhibitor{App: args[0]}, Released: &ok}, func(w io.Writer) {
					if ok {
						fmt.Fprintf(w, "%s: inhibitor released\n", args[0])
					} else {
						fmt.Fprintf(w, "%s: no inhibitor to release\n", args[0])
					}
				})
			}
			if dur <= 0 || dur > inhibit.MaxFor {
				return fmt.Errorf("give how long to hold with --for, such as 30m, at most %v", inhibit.MaxFor)
			}
			by := "berth inhibit"
			if u, err := user.Current(); err == nil {
				by += " (" + u.Username + ")"
			}
			in, err := c.Inhibit(cmd.Context(), args[0], dur, reason, by)
			if errors.Is(err, api.ErrNoAgent) {
				g.log.Warn("no agent is running: writing the inhibitor file", "dir", store.Dir())
				now := time.Now()
				in, err = store.Set(inhibit.Inhibitor{App: args[0], Until: now.Add(dur), Reason: reason, By: by}, now)
			}
			if err != nil {
				return err
			}
			return g.print(inhibitResult{Inhibitor: in}, func(w io.Writer) {
				fmt.Fprintf(w, "inhibited %s\n", in)
			})
		},
	}
	d.register(cmd)
	cmd.Flags().DurationVar(&dur, "for", 0, "how long to hold the app's updates, such as 30m")
	cmd.Flags().StringVar(&reason, "reason", "", "why, shown in berth status")
	cmd.Flags().BoolVar(&release, "release", false, "remove the app's inhibitor")
	return cmd
}

// listInhibitors prints the inhibitors that hold now, from the agent or,
// without one, from the folder.
func (g *globals) listInhibitors(cmd *cobra.Command, c *api.Client, store *inhibit.Store) error {
	l, err := c.Inhibitors(cmd.Context())
	if errors.Is(err, api.ErrNoAgent) {
		l = &api.InhibitorList{}
		l.Inhibitors, l.Problems, err = store.List(time.Now())
		if l.Inhibitors == nil {
			l.Inhibitors = []inhibit.Inhibitor{}
		}
	}
	if err != nil {
		return err
	}
	for _, p := range l.Problems {
		g.log.Warn("not an inhibitor", "file", p.File, "error", p.Error)
	}
	return g.print(l, func(w io.Writer) {
		if len(l.Inhibitors) == 0 {
			fmt.Fprintln(w, "no inhibitor holds any app")
		}
		for _, in := range l.Inhibitors {
			fmt.Fprintln(w, in.String())
		}
	})
}
