package cli

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/labels"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/policy/rollout"
	"github.com/berth-dev/berth/policy/rollout/statement"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/state"
)

func newRolloutCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Steer the staged rollout of a release: pause, resume, abort, and show its plan",
		Long: `A release whose berth.yaml has a rollout plan reaches devices in waves; each
device computes its own wave. CI steers a rollout with signed statements
attached to the release digest in the registry: devices honour the newest
one that verifies with their trust policy and names that digest.`,
		Example: `  berth rollout plan oci://registry.example.com/fleet/line-3:v1.4.0 --device-id press-07 --device-labels ring=canary
  berth rollout pause oci://registry.example.com/fleet/line-3:v1.4.0 --sign-key env://COSIGN_KEY --reason "canary crash loop"`,
	}
	for _, a := range []rollout.Action{rollout.Pause, rollout.Resume, rollout.Abort} {
		cmd.AddCommand(newStatementCmd(g, a))
	}
	cmd.AddCommand(newPlanCmd(g), newRolloutStatusCmd(g), newRolloutWatchCmd(g))
	return cmd
}

// statementResult is what pause, resume and abort print.
type statementResult struct {
	URL       string         `json:"url"`
	Digest    string         `json:"digest"`
	Action    rollout.Action `json:"action"`
	SignedAt  time.Time      `json:"signedAt"`
	Reason    string         `json:"reason,omitempty"`
	Signed    string         `json:"signed,omitempty"`    // key, or bundle (signed elsewhere)
	Predicate string         `json:"predicate,omitempty"` // the file written by --predicate-out
}

var statementHelp = map[rollout.Action]string{
	rollout.Pause:  "devices not yet on the release do not adopt it; those on it stay",
	rollout.Resume: "adoption continues by the plan",
	rollout.Abort:  "devices on the release go back to the revision they ran before it; the others never adopt it",
}

func newStatementCmd(g *globals, a rollout.Action) *cobra.Command {
	var key, bundle, predicateOut, reason string
	cmd := &cobra.Command{
		Use:   string(a) + " REF (--sign-key KEY | --bundle FILE | --predicate-out FILE)",
		Short: "Sign " + article(a) + " " + string(a) + " statement for a release: " + statementHelp[a],
		Long: `Attach a signed ` + string(a) + ` statement to the digest REF resolves to (an OCI referrer
of the release, or under the sha256-<hex> tag on registries without the
referrers API). Its content names the action, the digest and the signed
time; the newest valid statement wins. Devices look for statements while a
release is in its rollout: until its last wave has been open one interval.

Sign with a cosign key (--sign-key), or keyless in CI: write the predicate
with --predicate-out, sign and attach it with
  cosign attest --new-bundle-format --type ` + statement.PredicateType + ` --predicate FILE HOST/REPO@DIGEST
or attach a bundle signed elsewhere with --bundle.`,
		Example: `  COSIGN_PASSWORD=... berth rollout ` + string(a) + ` oci://registry.example.com/fleet/line-3:v1.4.0 --sign-key cosign.key --reason "..."
  # keyless, in CI
  berth rollout ` + string(a) + ` oci://registry.example.com/fleet/line-3:v1.4.0 --predicate-out ` + string(a) + `.json --output json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if n := countSet(key, bundle, predicateOut); n != 1 {
				return errors.New("give exactly one of --sign-key KEY, --bundle FILE (a statement signed elsewhere) or --predicate-out FILE (to sign keyless with cosign attest)")
			}
			r, ref, err := g.resolveRef(cmd, args[0])
			if err != nil {
				return err
			}
			c := r.Client
			d, err := c.Name(ref)
			if err != nil {
				return err
			}
			st := statement.Statement{Action: a, Digest: ref.Digest, SignedAt: time.Now().UTC().Truncate(time.Second), Reason: reason}
			res := statementResult{URL: ref.String(), Digest: ref.Digest, Action: a, SignedAt: st.SignedAt, Reason: reason}
			ctx, cancel := g.step(cmd.Context())
			defer cancel()
			switch {
			case predicateOut != "":
				p, err := st.Predicate()
				if err != nil {
					return err
				}
				if err := os.WriteFile(predicateOut, append(p, '\n'), 0o644); err != nil {
					return fmt.Errorf("write %s: %w", predicateOut, err)
				}
				res.Predicate = predicateOut
			case bundle != "":
				b, err := readLimited(bundle, 1<<20)
				if err != nil {
					return err
				}
				if err := statement.Attach(ctx, d, b, c.RemoteOptions(ctx)...); err != nil {
					return fmt.Errorf("attach %s statement to %s: %w", a, ref, err)
				}
				res.Signed = "bundle"
			default:
				sv, err := cosign.LoadPrivateKey(key, cosignPassword)
				if err != nil {
					return fmt.Errorf("load signing key %s: %w", key, err)
				}
				if err := statement.Sign(ctx, d, st, sv, c.RemoteOptions(ctx)...); err != nil {
					return fmt.Errorf("sign %s statement for %s: %w", a, ref, err)
				}
				res.Signed = "key"
			}
			if res.Signed != "" {
				g.log.Info("statement attached", "action", string(a), "digest", ref.Digest, "signed", res.Signed)
			}
			return g.print(res, func(w io.Writer) {
				if res.Predicate != "" {
					fmt.Fprintf(w, "wrote the %s predicate for %s to %s; sign and attach it with:\n  cosign attest --new-bundle-format --type %s --predicate %s %s@%s\n",
						a, ref.Digest, predicateOut, statement.PredicateType, predicateOut, ref.Repo(), ref.Digest)
					return
				}
				fmt.Fprintf(w, "%s %s: signed statement attached (%s), signed at %s\n", a, ref, res.Signed, rollout.FormatTime(res.SignedAt))
			})
		},
	}
	cmd.Flags().StringVar(&key, "sign-key", "", "cosign private key to sign with: a file or env://VAR (password from COSIGN_PASSWORD)")
	cmd.Flags().StringVar(&bundle, "bundle", "", "attach this statement bundle, signed elsewhere (such as keyless in CI)")
	cmd.Flags().StringVar(&predicateOut, "predicate-out", "", "only write the statement's predicate to FILE, to sign it with cosign attest")
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the people reading the rollout's status")
	return cmd
}

// article is "an" before abort, else "a".
func article(a rollout.Action) string {
	if a == rollout.Abort {
		return "an"
	}
	return "a"
}

// countSet counts the non-empty strings.
func countSet(ss ...string) int {
	n := 0
	for _, s := range ss {
		if s != "" {
			n++
		}
	}
	return n
}

// readLimited reads a file of at most max bytes.
func readLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}

// planResult is what rollout plan prints.
type planResult struct {
	URL        string               `json:"url"`
	Digest     string               `json:"digest"`
	Verified   bool                 `json:"verified"`
	Created    time.Time            `json:"created"`
	Repository string               `json:"repository"`
	Waves      []rollout.WaveReport `json:"waves"`
	Device     *planDevice          `json:"device,omitempty"`
	Statements *statement.Result    `json:"statements,omitempty"`
}

// planDevice is where a device stands.
type planDevice struct {
	rollout.Device
	rollout.Decision
}

func newPlanCmd(g *globals) *cobra.Command {
	var keys, labelArgs []string
	var deviceID string
	var lf limitFlags
	cmd := &cobra.Command{
		Use:   "plan REF [--device-id ID] [--device-labels k=v,...] [--key cosign.pub]",
		Short: "Show a release's rollout waves, when each opens, and which wave a device is in",
		Long: `Read the rollout plan in REF's berth.yaml and print its waves and their open
times (the release's created time plus each wave's after). With --device-id
(and --device-labels), say which wave that device is in and what it does now.
With --key, the release's signature is verified first and the signed
statements (pause, resume, abort) are read and shown too.`,
		Example: `  berth rollout plan oci://registry.example.com/fleet/line-3:v1.4.0
  berth rollout plan oci://registry.example.com/fleet/line-3:v1.4.0 --device-id press-07 --device-labels ring=canary,line=3 --key cosign.pub --output json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			devLabels, err := parseLabels(labelArgs)
			if err != nil {
				return err
			}
			if len(devLabels) > 0 && deviceID == "" {
				return errors.New("--device-labels needs --device-id: the wave of a percentage depends on the id")
			}
			rel, err := g.loadRelease(cmd, args[0], keys, lf)
			if err != nil {
				return err
			}
			ref, c, policy := rel.ref, rel.remote.Client, rel.policy
			res := planResult{URL: ref.String(), Digest: ref.Digest, Repository: ref.Repository, Verified: policy != nil, Created: rel.created}
			if rel.plan == nil {
				return fmt.Errorf("%s has no rollout plan: every device adopts it as soon as it sees it (add rollout.waves to %s)", ref, state.FileName)
			}
			ctx, cancel := g.step(cmd.Context())
			defer cancel()
			now := time.Now()
			res.Waves = rollout.Describe(rel.plan, res.Created, now)
			if res.Verified {
				d, err := c.Name(ref)
				if err != nil {
					return err
				}
				if res.Statements, err = statement.Read(ctx, d, *policy, statement.Options{}, c.RemoteOptions(ctx)...); err != nil {
					return err
				}
			}
			if deviceID != "" {
				dev := rollout.Device{ID: deviceID, Labels: devLabels}
				dec, err := rollout.Decide(rollout.Input{Plan: rel.plan, Created: res.Created, Device: dev, Repository: ref.Repository,
					Action: res.Statements.Action(), Now: now})
				if err != nil {
					return err
				}
				res.Device = &planDevice{Device: dev, Decision: dec}
			}
			return g.print(res, func(w io.Writer) { printPlan(w, &res) })
		},
	}
	cmd.Flags().StringArrayVar(&keys, "key", nil, "cosign public key to verify the release and its statements with (repeatable)")
	cmd.Flags().StringVar(&deviceID, "device-id", "", "a device id, to show its wave")
	cmd.Flags().StringSliceVar(&labelArgs, "device-labels", nil, "the device's labels, k=v (comma-separated or repeated)")
	lf.register(cmd)
	return cmd
}

// parseLabels parses k=v labels.
func parseLabels(kvs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("--device-labels %q: use KEY=VALUE", kv)
		}
		if err := labels.CheckKey(k); err != nil {
			return nil, fmt.Errorf("--device-labels: %w", err)
		}
		if err := labels.CheckValue(v); err != nil {
			return nil, fmt.Errorf("--device-labels: %w", err)
		}
		out[k] = v
	}
	return out, nil
}

func printPlan(w io.Writer, r *planResult) {
	fmt.Fprintf(w, "%s\n  created: %s", r.URL, rollout.FormatTime(r.Created))
	if !r.Verified {
		fmt.Fprint(w, " (signature not verified)")
	}
	fmt.Fprintln(w)
	for _, wv := range r.Waves {
		who := fmt.Sprintf("%g%% of the devices by bucket", wv.Percent)
		if wv.Selector != nil {
			var sel []string
			for _, k := range slices.Sorted(maps.Keys(wv.Selector)) {
				sel = append(sel, k+"="+wv.Selector[k])
			}
			who = "devices labelled " + strings.Join(sel, ",")
		}
		when := "opens"
		if wv.Open {
			when = "open since"
		}
		fmt.Fprintf(w, "  wave %-12s after %-8s %s %s  (%s)\n", wv.Name, wv.After, when, rollout.FormatTime(wv.Opens), who)
	}
	if s := r.Statements; s != nil {
		if s.Latest != nil {
			fmt.Fprintf(w, "  statement: %s, signed at %s by %s", s.Latest.Action, rollout.FormatTime(s.Latest.SignedAt), s.Latest.Signer)
			if s.Latest.Reason != "" {
				fmt.Fprintf(w, " (%s)", s.Latest.Reason)
			}
			fmt.Fprintln(w)
		} else {
			fmt.Fprintln(w, "  statement: none")
		}
		for _, ig := range s.Ignored {
			fmt.Fprintf(w, "  ignored statement %s: %s\n", ig.Referrer, ig.Reason)
		}
	}
	if d := r.Device; d != nil {
		how := "by its hash bucket"
		if d.Placement.Selected {
			how = "by its labels"
		}
		fmt.Fprintf(w, "  device %s: wave %s (%s; bucket %d of %d): %s", d.ID, d.Placement.Name, how, d.Placement.Bucket, state.Buckets, d.Verdict)
		if d.Reason != "" {
			fmt.Fprintf(w, ": %s", d.Reason)
		}
		fmt.Fprintln(w)
	}
}

// resolveRef parses s and resolves it once to a digest (no request when it
// carries one), through the delivery path of the global flags.
func (g *globals) resolveRef(cmd *cobra.Command, s string) (*deliver.Remote, oci.Reference, error) {
	ref, err := oci.ParseReference(s)
	if err != nil {
		return nil, ref, err
	}
	r, err := g.remote()
	if err != nil {
		return nil, ref, err
	}
	ctx, cancel := g.step(cmd.Context())
	defer cancel()
	res, err := r.Resolve(ctx, ref, nil)
	if err != nil {
		return nil, ref, err
	}
	return r, res.Ref, nil
}
