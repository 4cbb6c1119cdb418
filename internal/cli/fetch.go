package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/progress"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/source/publish"
)

// verifyResult is what verify prints.
type verifyResult struct {
	URL      string `json:"url"`
	Digest   string `json:"digest"`
	Verified bool   `json:"verified"`
	Format   string `json:"format,omitempty"`
	Key      string `json:"key,omitempty"`
	Error    string `json:"error,omitempty"`
}

// remote is the delivery path to the registry the global flags reach.
func (g *globals) remote() (*deliver.Remote, error) {
	c, err := g.client()
	if err != nil {
		return nil, err
	}
	return &deliver.Remote{Client: c, Timeout: g.timeout, Log: g.log}, nil
}

// keyPolicy is the trust policy of --key files.
func keyPolicy(keyFiles []string) (*cosign.Policy, error) {
	keys, err := cosign.LoadPublicKeys(keyFiles...)
	if err != nil {
		return nil, err
	}
	return &cosign.Policy{Keys: keys}, nil
}

func newVerifyCmd(g *globals) *cobra.Command {
	var keys []string
	cmd := &cobra.Command{
		Use:   "verify REF --key cosign.pub",
		Short: "Check that an artifact's digest carries a valid signature",
		Long: `Resolve REF once to a digest and check that a signature for that exact
digest verifies with one of the keys (several --key for a rotation). Both the
sigstore bundle (OCI referrers) and cosign's legacy .sig formats are read. A
signature copied from another digest is refused. Exits 0 when verified, 1
otherwise, saying which check failed.`,
		Example: `  berth verify oci://registry.example.com/fleet/line-3:v1.4.0 --key cosign.pub
  berth verify oci://registry.example.com/fleet/line-3@sha256:... --key old.pub --key new.pub --output json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(keys) == 0 {
				return fmt.Errorf("give at least one public key with --key FILE")
			}
			policy, err := keyPolicy(keys)
			if err != nil {
				return err
			}
			r, err := g.remote()
			if err != nil {
				return err
			}
			ref, err := oci.ParseReference(args[0])
			if err != nil {
				return err
			}
			ctx, cancel := g.step(cmd.Context())
			defer cancel()
			res, err := r.Resolve(ctx, ref, nil)
			if err != nil {
				return err
			}
			ref = res.Ref
			sig, _, verr := r.Signature(ctx, ref, *policy)
			out := verifyResult{URL: ref.String(), Digest: ref.Digest, Verified: verr == nil}
			if verr != nil {
				out.Error = verr.Error()
			} else {
				out.Format, out.Key = sig.Format.String(), sig.Key
			}
			if err := g.print(out, func(w io.Writer) {
				if verr == nil {
					fmt.Fprintf(w, "verified %s: %s signature by %s\n", ref, out.Format, out.Key)
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

// limitFlags are the extraction caps shared by pull and diff.
type limitFlags struct {
	maxSize  int64
	maxFiles int
}

func (l *limitFlags) register(cmd *cobra.Command) {
	cmd.Flags().Int64Var(&l.maxSize, "max-size", archive.DefaultMaxSize, "largest total uncompressed size to accept, in bytes")
	cmd.Flags().IntVar(&l.maxFiles, "max-files", archive.DefaultMaxFiles, "largest number of entries to accept")
}

func (l limitFlags) limits() archive.Limits {
	return archive.Limits{MaxSize: l.maxSize, MaxFiles: l.maxFiles}
}

func newPullCmd(g *globals) *cobra.Command {
	var dir, layerType string
	var keys []string
	var skipVerify bool
	var lf limitFlags
	cmd := &cobra.Command{
		Use:   "pull REF -o DIR --key cosign.pub",
		Short: "Verify an artifact, then stream and extract it into a new folder",
		Long: `Resolve REF once, verify the signature of that digest, then stream its
content layer straight from the registry into DIR through a digest-verifying,
size-capped reader. Paths leaving DIR, links out of it, hard links and device
files are refused. DIR appears only once everything has been checked.`,
		Example: `  berth pull oci://registry.example.com/fleet/line-3:v1.4.0 -o ./state --key cosign.pub
  # a Flux or oras artifact with another layer type, no signature (loudly)
  berth pull oci://registry.example.com/misc/config:v1 -o ./config --layer-media-type application/vnd.oci.image.layer.v1.tar+gzip --insecure-skip-verify`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return fmt.Errorf("give the folder to extract into with -o DIR")
			}
			if len(keys) == 0 && !skipVerify {
				return fmt.Errorf("give the public key to verify with --key FILE, or pass --insecure-skip-verify to extract unverified content")
			}
			ref, err := oci.ParseReference(args[0])
			if err != nil {
				return err
			}
			o := deliver.PullOptions{Insecure: skipVerify, ExtractOptions: deliver.ExtractOptions{
				LayerMediaType: layerType,
				Limits:         lf.limits(),
				Progress: func(r io.Reader, n int64) io.Reader {
					return progress.NewReader(r, g.stderr, "pulling layer", n)
				},
			}}
			if skipVerify {
				g.log.Warn("SIGNATURE NOT VERIFIED: --insecure-skip-verify extracts content nobody vouched for", "ref", ref.String())
			} else if o.Policy, err = keyPolicy(keys); err != nil {
				return err
			}
			r, err := g.remote()
			if err != nil {
				return err
			}
			ctx, cancel := g.step(cmd.Context())
			defer cancel()
			res, err := r.Pull(ctx, ref, dir, o)
			if err != nil {
				return err
			}
			if s := res.Signature; s != nil {
				g.log.Info("verified", "ref", res.URL, "format", s.Format.String(), "key", s.Key)
			}
			return g.print(res, func(w io.Writer) {
				fmt.Fprintf(w, "pulled %s into %s: %d files, %s\n", res.URL, res.Dir, res.Files, progress.Size(res.Size))
			})
		},
	}
	cmd.Flags().StringVarP(&dir, "dir", "o", "", "folder to extract into; must not exist")
	cmd.Flags().StringArrayVar(&keys, "key", nil, "cosign public key (PEM file or env://VAR); repeat for a key rotation")
	cmd.Flags().BoolVar(&skipVerify, "insecure-skip-verify", false, "extract without checking any signature (not for production)")
	cmd.Flags().StringVar(&layerType, "layer-media-type", "", "media type of the layer to extract (default: the Flux content layer, else the only tar+gzip layer)")
	lf.register(cmd)
	return cmd
}

func newDiffCmd(g *globals) *cobra.Command {
	var ignore []string
	var lf limitFlags
	cmd := &cobra.Command{
		Use:   "diff DIR REF",
		Short: "Show which files pushing DIR would add, remove or change compared to REF",
		Long: `Show which files pushing DIR would add, remove or change compared to the
artifact REF.

Exit status: 0 when DIR matches REF, 2 when they differ (as diff(1)), 1 on
an error.`,
		Example: `  berth diff ./fleet oci://registry.example.com/fleet/line-3:stable
  berth diff ./fleet oci://registry.example.com/fleet/line-3:stable --output json`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := oci.ParseReference(args[1])
			if err != nil {
				return err
			}
			r, err := g.remote()
			if err != nil {
				return err
			}
			ctx, cancel := g.step(cmd.Context())
			defer cancel()
			res, err := r.Resolve(ctx, ref, nil)
			if err != nil {
				return err
			}
			ref = res.Ref
			ch, err := publish.Diff(ctx, r.Client, args[0], ref, publish.DiffOptions{Ignore: ignore, Limits: lf.limits()})
			if err != nil {
				return err
			}
			for _, l := range []*[]string{&ch.Added, &ch.Removed, &ch.Modified} {
				if *l == nil {
					*l = []string{} // [] in JSON, not null
				}
			}
			if err := g.print(ch, func(w io.Writer) {
				for _, p := range ch.Added {
					fmt.Fprintf(w, "added     %s\n", p)
				}
				for _, p := range ch.Removed {
					fmt.Fprintf(w, "removed   %s\n", p)
				}
				for _, p := range ch.Modified {
					fmt.Fprintf(w, "modified  %s\n", p)
				}
				if len(ch.Added)+len(ch.Removed)+len(ch.Modified) == 0 {
					fmt.Fprintf(w, "no changes: %s matches %s\n", args[0], ref)
				}
			}); err != nil {
				return err
			}
			if len(ch.Added)+len(ch.Removed)+len(ch.Modified) > 0 {
				return exitError{code: 2}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&ignore, "ignore", nil, "gitignore-style pattern to leave out (repeatable)")
	lf.register(cmd)
	return cmd
}
