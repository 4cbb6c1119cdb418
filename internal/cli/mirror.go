package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/berth-dev/berth/internal/progress"
	"github.com/berth-dev/berth/source/replicate"
)

// mirrorCheck is what mirror --check-config prints.
type mirrorCheck struct {
	File   string   `json:"file"`
	Jobs   []string `json:"jobs"`
	Routes int      `json:"routes"`
}

func newMirrorCmd(g *globals) *cobra.Command {
	var file string
	var once, check bool
	cmd := &cobra.Command{
		Annotations: map[string]string{logLevelAnnotation: "info"},
		Use:         "mirror --config mirror.yaml [--once]",
		Short:       "Keep site registries in sync with upstream repositories, signatures included",
		Long: `Copy the tags that each job of mirror.yaml selects (a list, a semver range
or a filter, optionally only the newest N) from an upstream repository to
one or more target repositories: every platform of an index, the referrers
(cosign bundles, through the referrers API or the sha256-<hex> tag
fallback) and cosign's legacy sha256-<hex>.sig tags, byte for byte, so
digests stay the same. A tag already at the target with all its signatures
costs a few HEAD requests and nothing else; blobs the target has are not
uploaded again. Nothing is deleted from a target.

A target may be the source of another job: replica registries are kept in
sync by chaining jobs, and each pass runs a job after those that feed it.
An upstream that cannot be read fails its job and leaves the targets as
they were; the other jobs go on.

With --once, one pass runs and berth exits 1 if anything failed. Without
it, each job runs every interval until SIGTERM or Ctrl-C, and a summary is
printed after each pass (one JSON object per line with --output json).
--timeout bounds listing one repository and copying one tag to one target.
See examples/mirror.yaml.`,
		Example: `  berth mirror --config /etc/berth/mirror.yaml --once
  berth mirror --config mirror.yaml --once --output json --docker-config /etc/berth/docker/config.json
  berth mirror --config mirror.yaml --check-config
  # as a service: every job at its interval, until SIGTERM
  berth mirror --config /etc/berth/mirror.yaml --log-format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("give the mirror configuration with --config FILE (see examples/mirror.yaml)")
			}
			cfg, err := replicate.Load(file)
			if err != nil {
				return err
			}
			if check {
				out := mirrorCheck{File: file, Routes: len(cfg.Routes())}
				for _, j := range cfg.Jobs {
					out.Jobs = append(out.Jobs, j.Name)
				}
				return g.print(out, func(w io.Writer) {
					fmt.Fprintf(w, "%s is valid: %d jobs, %d repositories to sync\n", file, len(out.Jobs), out.Routes)
				})
			}
			regs, err := replicate.NewRegistries(replicate.Access{
				DockerConfig: g.dockerConfig,
				CAFile:       g.caFile,
				Insecure:     g.insecure,
				UserAgent:    "berth/" + Version,
			}, cfg.Registries)
			if err != nil {
				return err
			}
			line := newStatusLine(g.stderr)
			s, err := replicate.New(cfg, regs, replicate.Options{Log: g.log, Timeout: g.timeout, Progress: line.progress})
			if err != nil {
				return err
			}
			if once {
				rep := s.Once(cmd.Context())
				line.clear()
				if err := g.print(rep, func(w io.Writer) { printMirrorReport(w, rep) }); err != nil {
					return err
				}
				if !rep.OK() {
					return exitError{code: 1}
				}
				return nil
			}
			g.log.Info("mirror started", "config", file, "jobs", len(cfg.Jobs))
			err = s.Run(cmd.Context(), func(rep *replicate.Report) {
				line.clear()
				if g.output == "json" {
					b, err := json.Marshal(rep)
					if err == nil {
						fmt.Fprintf(g.stdout, "%s\n", b)
					}
					return
				}
				printMirrorReport(g.stdout, rep)
			})
			g.log.Info("mirror stopped")
			return err
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "mirror configuration (see examples/mirror.yaml)")
	cmd.Flags().BoolVar(&once, "once", false, "run one pass and exit; exit 1 if anything failed")
	cmd.Flags().BoolVar(&check, "check-config", false, "check the configuration and exit")
	return cmd
}

// printMirrorReport writes a pass for people: per job, its counts, what
// was copied or failed (up-to-date tags are only counted), and the totals.
func printMirrorReport(w io.Writer, rep *replicate.Report) {
	for _, j := range rep.Jobs {
		sel := fmt.Sprintf("%d tags", j.Selected)
		if j.Listed > 0 {
			sel = fmt.Sprintf("%d of %d tags", j.Selected, j.Listed)
		}
		fmt.Fprintf(w, "job %s: %s: %d copied, %d up to date, %d failed (%s)\n", j.Name, sel, j.Copied, j.UpToDate, j.Failed, progress.Size(j.Bytes))
		for _, e := range j.Errors {
			fmt.Fprintf(w, "  upstream unavailable, targets left as they were: %s\n", e)
		}
		for _, e := range j.Warnings {
			fmt.Fprintf(w, "  warning %s\n", e)
		}
		for _, it := range j.Items {
			switch it.Status {
			case replicate.StatusCopied:
				fmt.Fprintf(w, "  copied  %s → %s (%s, %s)\n", it.Source, it.Target, it.Digest, progress.Size(it.Bytes))
			case replicate.StatusFailed:
				fmt.Fprintf(w, "  failed  %s → %s: %s\n", it.Source, it.Target, it.Error)
			}
		}
	}
	upstream := 0
	for _, j := range rep.Jobs {
		upstream += len(j.Errors)
	}
	fmt.Fprintf(w, "total: %d copied, %d up to date, %d failed", rep.Copied, rep.UpToDate, rep.Failed)
	if upstream > 0 {
		fmt.Fprintf(w, ", %d upstream repositories unavailable", upstream)
	}
	fmt.Fprintf(w, ", %s in %.1fs\n", progress.Size(rep.Bytes), rep.Seconds)
}

// statusLine draws the progress of a pass on one terminal line, at most
// every 200ms; it draws nothing when out is not a terminal.
type statusLine struct {
	out io.Writer

	mu    sync.Mutex
	last  time.Time
	drawn bool
}

func newStatusLine(out io.Writer) *statusLine {
	f, ok := out.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return &statusLine{}
	}
	return &statusLine{out: out}
}

func (l *statusLine) progress(p replicate.Progress) {
	if l.out == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); now.Sub(l.last) > 200*time.Millisecond {
		l.last, l.drawn = now, true
		fmt.Fprintf(l.out, "\rmirror: %d/%d tags synced, %s copied\x1b[K", p.Done, p.Total, progress.Size(p.Bytes))
	}
}

func (l *statusLine) clear() {
	if l.out == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.drawn {
		fmt.Fprint(l.out, "\r\x1b[K")
		l.drawn = false
	}
}
