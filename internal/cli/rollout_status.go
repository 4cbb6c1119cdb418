package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/policy/rollout"
	"github.com/berth-dev/berth/policy/rollout/progress"
	"github.com/berth-dev/berth/policy/rollout/statement"
)

// progressFlags are what rollout status and watch share: where Prometheus
// is, with credentials like the agent's report.prometheus, which devices
// and release to look at.
type progressFlags struct {
	prom                progress.ClientOptions
	source, selector    string
	unseenAfter, window time.Duration
	keys                []string
	lf                  limitFlags
}

func (f *progressFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.prom.URL, "prometheus", "", "base URL of the Prometheus (or Mimir, Thanos, VictoriaMetrics) the devices remote-write to, such as https://prometheus.example.com (required)")
	fl.StringVar(&f.prom.CAFile, "prometheus-ca-file", "", "PEM file of CA certificates to trust for Prometheus, in addition to the system ones")
	fl.StringVar(&f.prom.BearerTokenFile, "bearer-token-file", "", "file holding a bearer token for Prometheus")
	fl.StringVar(&f.prom.Username, "username", "", "basic-auth user for Prometheus (with --password-file)")
	fl.StringVar(&f.prom.PasswordFile, "password-file", "", "file holding the basic-auth password for Prometheus")
	fl.StringVar(&f.source, "source", "", "the source name the devices track the release under (sources[].name in agent.yaml); default: every device")
	fl.StringVar(&f.selector, "selector", "", `PromQL label matchers on the devices' labels, such as 'site="berlin",line=~"3|4"'`)
	fl.DurationVar(&f.unseenAfter, "unseen-after", 3*time.Minute, "a device without a heartbeat for longer is unseen (a few of its report intervals)")
	fl.DurationVar(&f.window, "window", 24*time.Hour, "how far back devices are looked for")
	fl.StringArrayVar(&f.keys, "key", nil, "cosign public key to verify the release (its rollout plan) with (repeatable); without it the plan is read unverified, with a warning")
	f.lf.register(cmd)
	_ = cmd.MarkFlagRequired("prometheus")
}

// open reads the release REF names (its digest and plan) and connects to
// Prometheus.
func (f *progressFlags) open(g *globals, cmd *cobra.Command, arg string) (*release, progress.Querier, *progress.Plan, progress.Query, error) {
	f.prom.UserAgent = "berth/" + Version
	api, err := progress.NewClient(f.prom)
	if err != nil {
		return nil, nil, nil, progress.Query{}, err
	}
	rel, err := g.loadRelease(cmd, arg, f.keys, f.lf)
	if err != nil {
		return nil, nil, nil, progress.Query{}, err
	}
	q := progress.Query{Digest: rel.ref.Digest, Source: f.source, Selector: f.selector, UnseenAfter: f.unseenAfter, Window: f.window}
	return rel, api, progress.NewPlan(rel.plan, rel.created, rel.ref.Repository), q, nil
}

// statusResult is what rollout status prints.
type statusResult struct {
	URL string `json:"url"`
	*progress.Report
}

func newRolloutStatusCmd(g *globals) *cobra.Command {
	var f progressFlags
	cmd := &cobra.Command{
		Use:   "status REF --prometheus URL",
		Short: "Show how far a release's rollout has come, per wave, from what the devices report to Prometheus",
		Long: `Read, for the release REF resolves to, what the devices remote-write to
Prometheus (report.prometheus in agent.yaml) and count per wave of its
rollout plan: the devices in the wave, on the release, healthy, failed
(with their ids), waiting (and why: wave, window, inhibitor, paused),
pending, and unseen (no heartbeat for longer than --unseen-after).

A device's wave is the one it reports; a device that reports none is
placed by the plan, as it places itself. berth runs no fleet server:
Prometheus (or Mimir, Thanos, VictoriaMetrics) holds the reports.`,
		Example: `  berth rollout status oci://registry.example.com/fleet/line-3:v1.4.0 --prometheus https://prometheus.example.com --source line-3 --key cosign.pub
  berth rollout status oci://registry.example.com/fleet/line-3@sha256:... --prometheus http://127.0.0.1:9090 --selector 'site="berlin"' --output json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rel, api, plan, q, err := f.open(g, cmd, args[0])
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			r, err := progress.Read(ctx, api, plan, q)
			if err != nil {
				return err
			}
			res := statusResult{URL: rel.ref.String(), Report: r}
			return g.print(res, func(w io.Writer) { printRolloutStatus(w, res.URL, r) })
		},
	}
	f.register(cmd)
	return cmd
}

// watchResult is what rollout watch prints.
type watchResult struct {
	URL string `json:"url"`
	*progress.WatchResult
	// Statement is the statement the breaker signed and pushed, or wrote
	// to Predicate for cosign attest (keyless).
	Statement *statement.Statement `json:"statement,omitempty"`
	// Predicate is the file the breaker wrote the statement's predicate
	// to, with --predicate-out; empty when it signed with a key.
	Predicate string `json:"predicate,omitempty"`
}

// exitTripped is rollout watch's exit status when the breaker tripped and
// its statement was pushed (or, keyless, its predicate written).
const exitTripped = 2

func newRolloutWatchCmd(g *globals) *cobra.Command {
	var f progressFlags
	var w watchFlags
	cmd := &cobra.Command{
		Use:   "watch REF --prometheus URL [--max-failed 5% (--sign-key KEY | --predicate-out FILE)]",
		Short: "Follow a release's rollout until it settles; pause it when a wave fails (the circuit breaker)",
		Long: `Read the rollout of the release REF resolves to from Prometheus, as rollout
status does, every --poll, until it settles: every wave open and every
device healthy, failed or unseen.

With --max-failed, watch is the rollout's circuit breaker: when the
devices of an open wave that failed the release pass the threshold (a
share such as 5%, or a number of devices) among those of the wave that
tried it (healthy or failed, once at least --min-devices did), it signs a
pause statement (or abort, with --action abort) with --sign-key, attaches
it to the release digest in the registry, and exits with status 2, naming
the failing devices. Devices not yet on the release then do not adopt it.

Keyless (CI with an OIDC identity): with --predicate-out FILE instead of
--sign-key, the breaker writes the statement's predicate to FILE and exits
with status 2; the next step signs and attaches it with
  cosign attest --new-bundle-format --type ` + statement.PredicateType + ` --predicate FILE HOST/REPO@DIGEST
(examples/ci/github-actions.yml does this).

Exit status: 0 settled (failures below the threshold are listed), 2 the
breaker tripped and its statement was pushed, 1 anything else (Prometheus
unreachable --max-errors times in a row, --max-wait passed, the statement
could not be pushed: the error says so).`,
		Example: `  COSIGN_PASSWORD=... berth rollout watch oci://registry.example.com/fleet/line-3@sha256:... \
    --prometheus https://prometheus.example.com --bearer-token-file prometheus.token \
    --source line-3 --max-failed 5% --min-devices 3 --sign-key env://COSIGN_KEY --key cosign.pub
  # keyless, in CI: on exit status 2, sign pause.json with cosign attest
  berth rollout watch oci://registry.example.com/fleet/line-3@sha256:... --prometheus https://prometheus.example.com \
    --max-failed 5% --predicate-out pause.json
  # only follow it, one JSON document at the end
  berth rollout watch oci://registry.example.com/fleet/line-3:v1.4.0 --prometheus http://127.0.0.1:9090 --poll 10s --max-wait 2h --output json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return g.rolloutWatch(cmd, args[0], &f, &w) },
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&w.maxFailed, "max-failed", "", "the circuit breaker's threshold: the failures an open wave tolerates, a share (5%) or a number of devices (3)")
	fl.IntVar(&w.minDevices, "min-devices", 1, "devices of a wave that must have tried the release before the breaker judges the wave")
	fl.StringVar(&w.key, "sign-key", "", "cosign private key the breaker signs its statement with: a file or env://VAR (password from COSIGN_PASSWORD)")
	fl.StringVar(&w.predicateOut, "predicate-out", "", "keyless: when the breaker trips, write the statement's predicate to FILE (to sign with cosign attest) instead of signing with a key")
	fl.StringVar(&w.action, "action", "pause", "the statement the breaker signs: pause or abort")
	fl.DurationVar(&w.poll, "poll", 30*time.Second, "time between two reads of Prometheus")
	fl.IntVar(&w.maxErrors, "max-errors", 5, "reads of Prometheus that may fail in a row before watch gives up")
	fl.DurationVar(&w.maxWait, "max-wait", 0, "give up when the rollout has not settled after this long (0: no limit; CI jobs have their own)")
	return cmd
}

// watchFlags are rollout watch's own flags.
type watchFlags struct {
	maxFailed, key, action string
	predicateOut           string
	minDevices, maxErrors  int
	poll, maxWait          time.Duration
}

// breaker returns the breaker of --max-failed and the key it signs with,
// loaded now: a key that does not load must fail the job before the
// watch, not when the rollout needs pausing. Nil without --max-failed.
func (w *watchFlags) breaker() (*progress.Breaker, rollout.Action, signature.SignerVerifier, error) {
	a, err := rollout.ParseAction(w.action)
	if err != nil || (a != rollout.Pause && a != rollout.Abort) {
		return nil, a, nil, fmt.Errorf("--action %q: use pause (devices not on the release stay off it) or abort (devices on it go back too)", w.action)
	}
	if w.key != "" && w.predicateOut != "" {
		return nil, a, nil, errors.New("give --sign-key (sign with a key) or --predicate-out (keyless: write the predicate for cosign attest), not both")
	}
	if (w.maxFailed == "") != (w.key == "" && w.predicateOut == "") {
		return nil, a, nil, errors.New("give --max-failed with --sign-key KEY (or --predicate-out FILE, keyless): the breaker signs a statement when the threshold is passed; without them, watch only follows the rollout")
	}
	if w.maxFailed == "" {
		return nil, a, nil, nil
	}
	t, err := progress.ParseThreshold(w.maxFailed)
	if err != nil {
		return nil, a, nil, fmt.Errorf("--max-failed: %w", err)
	}
	b := &progress.Breaker{MaxFailed: t, MinDevices: w.minDevices}
	if w.predicateOut != "" {
		return b, a, nil, nil
	}
	sv, err := cosign.LoadPrivateKey(w.key, cosignPassword)
	if err != nil {
		return nil, a, nil, fmt.Errorf("load signing key %s: %w", w.key, err)
	}
	return b, a, sv, nil
}

// rolloutWatch runs rollout watch on the release arg names.
func (g *globals) rolloutWatch(cmd *cobra.Command, arg string, f *progressFlags, w *watchFlags) error {
	b, a, sv, err := w.breaker()
	if err != nil {
		return err
	}
	o := progress.WatchOptions{Poll: w.poll, MaxErrors: w.maxErrors, Breaker: b}
	rel, api, plan, q, err := f.open(g, cmd, arg)
	if err != nil {
		return err
	}
	res := watchResult{URL: rel.ref.String()}
	if w.predicateOut != "" {
		o.Pause = writePredicate(rel, a, w.predicateOut, &res)
	} else if o.Pause, err = g.signStatement(rel, a, sv, &res); err != nil {
		return err
	}
	if g.output != "json" {
		o.Observe = func(r *progress.Report, err error) { observeLine(g.stderr, r, err) }
	}
	ctx := cmd.Context()
	if w.maxWait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w.maxWait)
		defer cancel()
	}
	wr, werr := progress.Watch(ctx, api, plan, q, o)
	res.WatchResult = wr
	if wr != nil {
		if err := g.print(res, func(w io.Writer) { printWatch(w, &res) }); err != nil {
			return err
		}
	}
	switch {
	case werr != nil:
		return werr
	case wr.Outcome == progress.Paused && res.Predicate != "":
		return exitError{code: exitTripped, err: fmt.Errorf("the rollout of %s failed: %s predicate written to %s; sign and attach it with cosign attest --new-bundle-format --type %s --predicate %s %s@%s: %s",
			rel.ref, a, res.Predicate, statement.PredicateType, res.Predicate, rel.ref.Repo(), rel.ref.Digest, progress.Reason(wr.Trips, 0))}
	case wr.Outcome == progress.Paused:
		return exitError{code: exitTripped, err: fmt.Errorf("the rollout of %s failed: %s statement pushed: %s", rel.ref, a, progress.Reason(wr.Trips, 0))}
	}
	return nil
}

// signStatement returns the Pause of a watch: it signs the action's
// statement for the release with sv, attaches it, and records it in res.
func (g *globals) signStatement(rel *release, a rollout.Action, sv signature.SignerVerifier, res *watchResult) (func(context.Context, *progress.Report, []progress.Trip) error, error) {
	c := rel.remote.Client
	d, err := c.Name(rel.ref)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, _ *progress.Report, trips []progress.Trip) error {
		st := progress.Statement(a, rel.ref.Digest, trips, time.Now())
		ctx, cancel := g.step(ctx)
		defer cancel()
		if err := statement.Sign(ctx, d, st, sv, c.RemoteOptions(ctx)...); err != nil {
			return fmt.Errorf("sign %s statement for %s: %w", a, rel.ref, err)
		}
		res.Statement = &st
		g.log.Warn("circuit breaker tripped: statement attached", "action", string(a), "digest", rel.ref.Digest, "reason", st.Reason)
		return nil
	}, nil
}

// writePredicate returns the Pause of a keyless watch: it writes the
// action's statement predicate to path, for cosign attest to sign.
func writePredicate(rel *release, a rollout.Action, path string, res *watchResult) func(context.Context, *progress.Report, []progress.Trip) error {
	return func(_ context.Context, _ *progress.Report, trips []progress.Trip) error {
		st := progress.Statement(a, rel.ref.Digest, trips, time.Now())
		p, err := st.Predicate()
		if err != nil {
			return err
		}
		if err := os.WriteFile(path, append(p, '\n'), 0o644); err != nil {
			return fmt.Errorf("write the %s predicate for %s to %s: %w", a, rel.ref, path, err)
		}
		res.Statement, res.Predicate = &st, path
		return nil
	}
}

// observeLine writes one line per poll of watch: each wave's counts.
func observeLine(w io.Writer, r *progress.Report, err error) {
	now := time.Now().UTC().Format(time.TimeOnly)
	if err != nil {
		fmt.Fprintf(w, "%s read failed: %v\n", now, err)
		return
	}
	parts := make([]string, 0, len(r.Waves))
	for _, wv := range r.Waves {
		if !wv.Open {
			parts = append(parts, fmt.Sprintf("%s: closed, %d devices", wv.Name, wv.Devices))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: %d/%d healthy, %d failed, %d waiting, %d pending, %d unseen",
			wv.Name, wv.Healthy, wv.Devices, len(wv.Failed), sum(wv.Waiting), wv.Pending, len(wv.Unseen)))
	}
	fmt.Fprintf(w, "%s %s\n", now, strings.Join(parts, "; "))
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func printRolloutStatus(w io.Writer, url string, r *progress.Report) {
	fmt.Fprintf(w, "%s\n  release %s, at %s", url, r.Digest, rollout.FormatTime(r.At))
	switch {
	case r.Complete:
		fmt.Fprint(w, ": complete")
	case r.Settled:
		fmt.Fprint(w, ": settled, with failures")
	}
	fmt.Fprintln(w)
	for _, wv := range r.Waves {
		when := "open"
		if !wv.Open {
			when = "opens " + rollout.FormatTime(wv.Opens)
		}
		fmt.Fprintf(w, "  wave %-12s %s: %d devices, %d on the release, %d healthy, %d failed, %d waiting, %d pending, %d unseen\n",
			wv.Name, when, wv.Devices, wv.OnRelease, wv.Healthy, len(wv.Failed), sum(wv.Waiting), wv.Pending, len(wv.Unseen))
		if len(wv.Failed) > 0 {
			fmt.Fprintf(w, "    failed: %s\n", strings.Join(wv.Failed, ", "))
		}
		if len(wv.Waiting) > 0 {
			var why []string
			for _, k := range slices.Sorted(maps.Keys(wv.Waiting)) {
				why = append(why, fmt.Sprintf("%s %d", k, wv.Waiting[k]))
			}
			fmt.Fprintf(w, "    waiting: %s\n", strings.Join(why, ", "))
		}
		if len(wv.Unseen) > 0 {
			fmt.Fprintf(w, "    unseen: %s\n", strings.Join(wv.Unseen, ", "))
		}
	}
	if len(r.Devices) == 0 {
		fmt.Fprintln(w, "  no device reports this release's source: check --source, --selector and report.prometheus on the devices")
	}
}

func printWatch(w io.Writer, r *watchResult) {
	if r.Report != nil {
		printRolloutStatus(w, r.URL, r.Report)
	}
	switch r.Outcome {
	case progress.Paused:
		for _, t := range r.Trips {
			fmt.Fprintf(w, "  breaker tripped: %s\n", t)
		}
		if r.Statement != nil && r.Predicate != "" {
			fmt.Fprintf(w, "  %s predicate written to %s: sign and attach it with cosign attest\n", r.Statement.Action, r.Predicate)
		} else if r.Statement != nil {
			fmt.Fprintf(w, "  %s statement signed at %s and attached to %s\n", r.Statement.Action, rollout.FormatTime(r.Statement.SignedAt), r.Statement.Digest)
		}
	case progress.Complete, progress.Settled:
		fmt.Fprintf(w, "  rollout %s after %d reads\n", r.Outcome, r.Polls)
	}
}
