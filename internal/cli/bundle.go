package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/progress"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/source/bundle"
	"github.com/berth-dev/berth/source/oci"
)

func newBundleCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Carry a signed state, its charts and images to sites without registry access",
		Long: `A bundle is one file (an OCI image layout in a tar) holding a state artifact,
its signatures and every chart and image its lock names, with their digests
unchanged. Make it where the registries are reachable, carry it to the site,
check it offline, then load it into the site's registry or hand it to the
agent directly (a source url: file:///media/usb/site.tar).`,
		Example: `  berth bundle create oci://registry.example.com/fleet/line-3:v1.4.0 -o site.tar --key cosign.pub
  berth bundle inspect site.tar
  berth bundle verify site.tar --key cosign.pub
  berth bundle push site.tar plant-registry.local:5000/mirror`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newBundleCreateCmd(g), newBundleInspectCmd(g), newBundleVerifyCmd(g), newBundlePushCmd(g))
	return cmd
}

// bundleCreateResult is what bundle create prints.
type bundleCreateResult struct {
	File      string         `json:"file"`
	Root      string         `json:"root"`
	Digest    string         `json:"digest"`
	Platforms []string       `json:"platforms,omitempty"`
	Items     []bundle.Item  `json:"items"`
	Summary   bundle.Summary `json:"summary"`
}

func newBundleCreateCmd(g *globals) *cobra.Command {
	var file string
	var platforms, keys []string
	var skipVerify bool
	var jobs int
	var lf limitFlags
	cmd := &cobra.Command{
		Use:   "create REF -o FILE --key cosign.pub",
		Short: "Bundle a state with its signatures, charts and images into one file",
		Long: `Resolve REF (oci://HOST/REPO:TAG or @DIGEST) once, verify the signature of
that digest, read the lock (berth.lock.json) in the state, and write one OCI
image layout tar holding: the state artifact; its signatures in both formats
(the sigstore bundle referrers, through the referrers API or its tag
fallback, and cosign's legacy sha256-<hex>.sig tag); every chart and image
the lock names, by the digest it pins. Digests are unchanged, so signatures
still verify wherever the bundle is loaded.

Blobs are streamed from the registries straight into the file, each checked
against its digest on the way, and stored once however many images share
them. The file appears only when complete.

--platform keeps only the child manifests of those platforms in the image
indexes (repeat it or separate with commas). The index itself is kept
unchanged, so its digest (the one Compose files and the lock name) stays
valid; it then names manifests the bundle does not hold, which the agent's
file:// source accepts, but a registry that checks index children (the
distribution registry does) refuses when the bundle is pushed: push then
loads the platform images and reports the index.`,
		Example: `  berth bundle create oci://registry.example.com/fleet/line-3:v1.4.0 -o site.tar --key cosign.pub
  # only what arm64 devices run, signed with a rotated key pair
  berth bundle create oci://registry.example.com/fleet/line-3@sha256:... -o site.tar --platform linux/arm64 --key old.pub --key new.pub`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return fmt.Errorf("give the bundle file to write with -o FILE")
			}
			if len(keys) == 0 && !skipVerify {
				return fmt.Errorf("give the public key to verify with --key FILE, or pass --insecure-skip-verify to bundle unverified content")
			}
			ref, err := oci.ParseReference(args[0])
			if err != nil {
				return err
			}
			var policy *cosign.Policy
			if skipVerify {
				g.log.Warn("SIGNATURE NOT VERIFIED: --insecure-skip-verify bundles content nobody vouched for", "ref", ref.String())
			} else if policy, err = keyPolicy(keys); err != nil {
				return err
			}
			r, err := g.remote()
			if err != nil {
				return err
			}
			ctx, cancel := g.step(cmd.Context())
			state, err := r.Fetch(ctx, ref, policy, skipVerify)
			cancel()
			if err != nil {
				return err
			}
			if s := state.Signature; s != nil {
				g.log.Info("verified", "ref", state.Ref.String(), "format", s.Format.String(), "key", s.Key)
			}
			b, err := bundle.Create(cmd.Context(), r.Client, bundle.CreateOptions{
				State:     state,
				Output:    file,
				Platforms: platforms,
				Jobs:      jobs,
				Limits:    lf.limits(),
				Log:       g.log,
				Progress: func(r io.Reader, n int64) io.Reader {
					return progress.NewReader(r, g.stderr, "bundling", n)
				},
			})
			if err != nil {
				return err
			}
			defer b.Close()
			root, desc := b.Root()
			out := bundleCreateResult{File: file, Root: root, Digest: desc.Digest.String(), Platforms: b.Platforms(), Items: b.Items(), Summary: b.Summary()}
			return g.print(out, func(w io.Writer) {
				counts := map[bundle.Role]int{}
				for _, it := range out.Items {
					counts[it.Role]++
				}
				fmt.Fprintf(w, "bundled %s@%s into %s: %d image(s), %d chart(s), %d signature(s); %d blobs, %s\n",
					root, short(out.Digest), file, counts[bundle.RoleImage], counts[bundle.RoleChart], counts[bundle.RoleSignature],
					out.Summary.Blobs, progress.Size(out.Summary.FileSize))
			})
		},
	}
	cmd.Flags().StringVarP(&file, "file", "o", "", "bundle file to write (replaced if it exists)")
	cmd.Flags().StringArrayVar(&platforms, "platform", nil, "only bundle image manifests for this platform, os/arch[/variant] (repeatable; default: all)")
	cmd.Flags().StringArrayVar(&keys, "key", nil, "cosign public key (PEM file or env://VAR) the state must be signed with; repeat for a key rotation")
	cmd.Flags().BoolVar(&skipVerify, "insecure-skip-verify", false, "bundle without checking the state's signature (not for production)")
	cmd.Flags().IntVar(&jobs, "jobs", 4, "blobs to download at once")
	lf.register(cmd)
	return cmd
}

// bundleInspectResult is what bundle inspect prints.
type bundleInspectResult struct {
	File      string         `json:"file"`
	Root      string         `json:"root"`
	Digest    string         `json:"digest"`
	Platforms []string       `json:"platforms,omitempty"`
	Items     []bundle.Item  `json:"items"`
	Summary   bundle.Summary `json:"summary"`
}

// displayOrder lists roles as inspect shows them.
var displayOrder = []bundle.Role{bundle.RoleState, bundle.RoleSignature, bundle.RoleChart, bundle.RoleImage}

func newBundleInspectCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect FILE",
		Short: "List what a bundle holds: root, contents by role, digests, sizes, totals",
		Long: `Open the bundle, check its structure (tar entries, index, every manifest's
digest, every blob present) and list its contents. Layers are not read: use
berth bundle verify to check every byte and the state's signature.`,
		Example: `  berth bundle inspect site.tar
  berth bundle inspect site.tar --output json | jq -r '.items[] | select(.role=="image") | .ref'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := bundle.Open(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer b.Close()
			root, desc := b.Root()
			items := b.Items()
			slices.SortStableFunc(items, func(x, y bundle.Item) int {
				return slices.Index(displayOrder, x.Role) - slices.Index(displayOrder, y.Role)
			})
			out := bundleInspectResult{File: args[0], Root: root, Digest: desc.Digest.String(), Platforms: b.Platforms(), Items: items, Summary: b.Summary()}
			return g.print(out, func(w io.Writer) {
				plat := "all"
				if len(out.Platforms) > 0 {
					plat = strings.Join(out.Platforms, ", ")
				}
				fmt.Fprintf(w, "bundle     %s (%s)\nroot       %s@%s\nplatforms  %s\n\n", args[0], progress.Size(out.Summary.FileSize), root, out.Digest, plat)
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ROLE\tREFERENCE\tDIGEST\tBLOBS\tSIZE\tPLATFORMS")
				for _, it := range items {
					p := strings.Join(it.Platforms, ", ")
					if len(it.Excluded) > 0 {
						p += " (left out: " + strings.Join(it.Excluded, ", ") + ")"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", it.Role, it.Ref, short(it.Digest.String()), it.Blobs, progress.Size(it.Bytes), p)
				}
				tw.Flush()
				fmt.Fprintf(w, "\n%d item(s) from %d repositories: %d distinct blobs, %s\n",
					len(items), out.Summary.Repositories, out.Summary.Blobs, progress.Size(out.Summary.Bytes))
			})
		},
	}
}

// bundleVerifyResult is what bundle verify prints.
type bundleVerifyResult struct {
	File     string `json:"file"`
	Root     string `json:"root,omitempty"`
	Digest   string `json:"digest,omitempty"`
	Blobs    bool   `json:"blobsVerified"`
	Verified bool   `json:"verified"`
	Format   string `json:"format,omitempty"`
	Key      string `json:"key,omitempty"`
	Error    string `json:"error,omitempty"`
}

func newBundleVerifyCmd(g *globals) *cobra.Command {
	var keys []string
	cmd := &cobra.Command{
		Use:   "verify FILE --key cosign.pub",
		Short: "Check every blob of a bundle and the state's signature, offline",
		Long: `Read every blob of the bundle and check it against its digest (an altered
blob is named with what it belongs to), then check the state's cosign
signature against the keys, reading the signatures from the bundle as a
registry would (sigstore bundle referrers, then the legacy .sig tag). No
network is used. Exits 0 when both hold, 1 otherwise.`,
		Example: `  berth bundle verify site.tar --key cosign.pub
  berth bundle verify /media/usb/site.tar --key old.pub --key new.pub --output json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(keys) == 0 {
				return fmt.Errorf("give at least one public key with --key FILE")
			}
			policy, err := keyPolicy(keys)
			if err != nil {
				return err
			}
			out := bundleVerifyResult{File: args[0]}
			verr := verifyBundle(cmd.Context(), g, args[0], *policy, &out)
			if verr != nil {
				out.Error = verr.Error()
			}
			if err := g.print(out, func(w io.Writer) {
				if verr == nil {
					fmt.Fprintf(w, "verified %s: every blob matches its digest; %s@%s carries a %s signature by %s\n",
						args[0], out.Root, short(out.Digest), out.Format, out.Key)
				}
			}); err != nil {
				return err
			}
			return verr
		},
	}
	cmd.Flags().StringArrayVar(&keys, "key", nil, "cosign public key (PEM file or env://VAR); repeat for a key rotation")
	return cmd
}

// verifyBundle checks the blobs, then the signature, filling out.
func verifyBundle(ctx context.Context, g *globals, file string, p cosign.Policy, out *bundleVerifyResult) error {
	b, err := bundle.Open(ctx, file)
	if err != nil {
		return err
	}
	defer b.Close()
	root, desc := b.Root()
	out.Root, out.Digest = root, desc.Digest.String()
	res, err := b.VerifyAll(ctx, p, bundle.VerifyOptions{Progress: func(r io.Reader, n int64) io.Reader {
		return progress.NewReader(r, g.stderr, "checking", n)
	}})
	out.Blobs = res.Blobs
	if err != nil {
		return err
	}
	out.Verified, out.Format, out.Key = true, res.Signature.Format.String(), res.Signature.Key
	return nil
}

// bundlePushResult is what bundle push prints.
type bundlePushResult struct {
	File string `json:"file"`
	*bundle.PushResult
	Error string `json:"error,omitempty"`
}

func newBundlePushCmd(g *globals) *cobra.Command {
	var jobs int
	cmd := &cobra.Command{
		Use:   "push FILE REGISTRY[/PREFIX]",
		Short: "Load a bundle into a (plant) registry, digests and signatures kept",
		Long: `Upload everything the bundle holds into REGISTRY, keeping every digest, so
the state's signatures verify there and devices pull exactly what was
locked. Each original repository goes under REGISTRY[/PREFIX] with its path
and without its host:

  ghcr.io/acme/web          ->  REGISTRY/PREFIX/acme/web
  docker.io/library/nginx   ->  REGISTRY/PREFIX/library/nginx

which is how an agent's registry mirror set expects it:

  registries:
    - source: ghcr.io
      mirrors: [REGISTRY/PREFIX]

(one set per original host). Repositories of all hosts share the prefix:
when two hosts hold the same repository path, push to another prefix per
bundle or choose a prefix per site. Blobs go first,
then manifests, children before indexes; the state's signature referrers
are attached through the registry's referrers API or, without one, its
sha256-<hex> tag fallback; tags are recreated, the legacy .sig tag among
them. Whatever the registry already has is skipped after a HEAD request, so
pushing again uploads nothing. Every blob is checked against its digest as
it is read. Credentials, --ca-file and --insecure apply to REGISTRY.`,
		Example: `  berth bundle push site.tar plant-registry.local:5000/mirror
  berth bundle push /media/usb/site.tar 10.0.0.5:5000 --ca-file plant-ca.pem --output json`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			b, err := bundle.Open(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer b.Close()
			res, perr := b.Push(cmd.Context(), c, bundle.PushOptions{
				Target: args[1],
				Jobs:   jobs,
				Log:    g.log,
				Progress: func(r io.Reader, n int64) io.Reader {
					return progress.NewReader(r, g.stderr, "pushing", n)
				},
			})
			if res == nil {
				return perr
			}
			out := bundlePushResult{File: args[0], PushResult: res}
			if perr != nil {
				out.Error = perr.Error()
			}
			if err := g.print(out, func(w io.Writer) {
				fmt.Fprintf(w, "pushed %s to %s: blobs %d pushed (%s), %d skipped; manifests %d pushed, %d skipped; tags %d pushed, %d skipped\n",
					args[0], res.Target, res.Blobs.Pushed, progress.Size(res.Blobs.PushedBytes), res.Blobs.Skipped,
					res.Manifests.Pushed, res.Manifests.Skipped, res.Tags.Pushed, res.Tags.Skipped)
				fmt.Fprintf(w, "state: %s\n", res.Root)
				for _, m := range res.Repositories {
					fmt.Fprintf(w, "  %s -> %s\n", m.Source, m.Target)
				}
			}); err != nil {
				return err
			}
			if errors.Is(perr, bundle.ErrIncomplete) && g.output != "json" {
				for _, r := range res.Refused {
					fmt.Fprintf(g.stderr, "refused: %s\n", r)
				}
			}
			return perr
		},
	}
	cmd.Flags().IntVar(&jobs, "jobs", 4, "blobs to upload at once")
	return cmd
}
