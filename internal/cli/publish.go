package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/progress"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/source/publish"
)

func newBuildCmd(g *globals) *cobra.Command {
	var out string
	var ignore []string
	cmd := &cobra.Command{
		Use:   "build DIR -o artifact.tgz",
		Short: "Pack a folder into a reproducible tar+gzip, without pushing it",
		Long: `Pack DIR the way 'berth push' packs it: entries sorted, owners and times
zeroed, modes normalised. .git/ and paths matched by DIR/.berthignore
(gitignore syntax) or --ignore are left out. Symlinks must stay inside DIR.`,
		Example: `  berth build ./fleet -o fleet.tgz
  berth build ./fleet -o fleet.tgz --ignore '*.md' --ignore 'docs/'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("give the file to write with -o FILE")
			}
			tmp, err := os.CreateTemp(filepath.Dir(out), ".berth-build-*")
			if err != nil {
				return fmt.Errorf("create %s: %w", out, err)
			}
			defer os.Remove(tmp.Name())
			res, err := archive.Build(cmd.Context(), args[0], tmp, archive.BuildOptions{Ignore: ignore})
			if err == nil {
				err = tmp.Sync()
			}
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("pack %s: %w", args[0], err)
			}
			if err := os.Chmod(tmp.Name(), 0o644); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), out); err != nil {
				return fmt.Errorf("write %s: %w", out, err)
			}
			return g.print(map[string]any{"file": out, "digest": res.Digest, "files": res.Files, "size": res.Size}, func(w io.Writer) {
				fmt.Fprintf(w, "wrote %s: %d files, %s, %s\n", out, res.Files, progress.Size(res.Size), res.Digest)
			})
		},
	}
	cmd.Flags().StringVarP(&out, "file", "o", "", "the tar+gzip file to write")
	cmd.Flags().StringArrayVar(&ignore, "ignore", nil, "gitignore-style pattern to leave out (repeatable)")
	return cmd
}

// signFlags are shared by push and sign.
type signFlags struct {
	key    string
	format string
}

func (s *signFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.key, "sign-key", "", "cosign private key to sign with: a file or env://VAR (password from COSIGN_PASSWORD)")
	cmd.Flags().StringVar(&s.format, "signature-format", "bundle", "bundle (sigstore bundle as an OCI referrer, as cosign v3 writes) or legacy (cosign's sha256-<hex>.sig tag)")
}

func cosignPassword() ([]byte, error) {
	pw, ok := os.LookupEnv("COSIGN_PASSWORD")
	if !ok {
		return nil, fmt.Errorf("set COSIGN_PASSWORD to the key's password (empty for an unencrypted key)")
	}
	return []byte(pw), nil
}

// signer loads the key and format of s: before anything is uploaded, so
// that a missing password or a bad key fails a push before it starts.
func (s signFlags) signer() (*deliver.Signer, error) {
	format, err := cosign.ParseFormat(s.format)
	if err != nil {
		return nil, fmt.Errorf("--signature-format: %w", err)
	}
	sv, err := cosign.LoadPrivateKey(s.key, cosignPassword)
	if err != nil {
		return nil, fmt.Errorf("load signing key %s: %w", s.key, err)
	}
	return &deliver.Signer{Key: sv, Format: format}, nil
}

func newPushCmd(g *globals) *cobra.Command {
	var o publish.Options
	var tags, annotations []string
	var sf signFlags
	cmd := &cobra.Command{
		Use:   "push DIR oci://HOST/REPO:TAG",
		Short: "Pin, pack, push and sign a folder of a Git checkout as a Flux-compatible artifact",
		Long: `Push DIR as an OCI artifact Flux can also read: config
application/vnd.cncf.flux.config.v1+json, one layer
application/vnd.cncf.flux.content.v1.tar+gzip, and the annotations
org.opencontainers.image.source, .revision and .created read from Git.

When DIR holds a berth.yaml, it is validated and every Helm chart and
Compose image it names is resolved to a digest; the pinned files (and
berth.lock.json) are what the artifact holds, so the signature covers every
byte a device will run. The same commit always gives the same digest.`,
		Example: `  # in CI, on merge
  export COSIGN_PASSWORD=...
  berth push ./fleet oci://registry.example.com/fleet/line-3:v1.4.0 -t canary --sign-key env://COSIGN_KEY

  # print the result for a script
  berth push ./fleet oci://registry.example.com/fleet/line-3:v1.4.0 --output json`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := oci.ParseReference(args[1])
			if err != nil {
				return err
			}
			if ref.Tag == "" || ref.Digest != "" {
				return fmt.Errorf("push to a tag: oci://HOST/REPO:TAG (got %s)", args[1])
			}
			o.Dir, o.Ref, o.Tags = args[0], ref, tags
			if o.Annotations, err = parseAnnotations(annotations); err != nil {
				return err
			}
			o.Progress = func(r io.Reader, n int64) io.Reader {
				return progress.NewReader(r, g.stderr, "pushing layer", n)
			}
			o.Packing = progress.NewCounter(g.stderr, "packing").Update
			var signer *deliver.Signer
			if sf.key != "" {
				if signer, err = sf.signer(); err != nil {
					return err
				}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.step(cmd.Context())
			defer cancel()
			res, err := deliver.Publish(ctx, c, o, signer)
			if err != nil {
				return err
			}
			g.log.Info("pushed", "url", res.URL, "revision", res.Revision, "files", res.Files, "locked", len(res.Locked), "signed", signer != nil)
			return g.print(res, func(w io.Writer) {
				fmt.Fprintf(w, "pushed %s\n  digest:   %s\n  tags:     %s\n  revision: %s\n", res.URL, res.Digest, strings.Join(res.Tags, ", "), res.Revision)
				for _, e := range res.Locked {
					fmt.Fprintf(w, "  pinned:   %s %s@%s\n", e.App, e.Ref, e.Digest)
				}
				if sf.key != "" {
					fmt.Fprintf(w, "  signed:   %s format\n", sf.format)
				}
			})
		},
	}
	cmd.Flags().StringArrayVarP(&tags, "tag", "t", nil, "extra tag for the same artifact (repeatable)")
	cmd.Flags().StringArrayVar(&annotations, "annotation", nil, "extra manifest annotation KEY=VALUE (repeatable)")
	cmd.Flags().StringArrayVar(&o.Ignore, "ignore", nil, "gitignore-style pattern to leave out (repeatable)")
	cmd.Flags().BoolVar(&o.AllowDirty, "allow-dirty", false, "push even if DIR has uncommitted changes")
	sf.register(cmd)
	return cmd
}

func parseAnnotations(kvs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--annotation %q: use KEY=VALUE", kv)
		}
		out[k] = v
	}
	return out, nil
}

func newSignCmd(g *globals) *cobra.Command {
	var sf signFlags
	cmd := &cobra.Command{
		Use:   "sign REF --sign-key KEY",
		Short: "Sign an artifact already in a registry",
		Example: `  COSIGN_PASSWORD=... berth sign oci://registry.example.com/fleet/line-3:v1.4.0 --sign-key cosign.key
  berth sign oci://registry.example.com/fleet/line-3@sha256:... --sign-key env://COSIGN_KEY --signature-format legacy`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if sf.key == "" {
				return fmt.Errorf("give the private key with --sign-key FILE or env://VAR")
			}
			signer, err := sf.signer()
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
			if err := deliver.Sign(ctx, r.Client, ref, *signer); err != nil {
				return err
			}
			g.log.Info("signed", "ref", ref.String(), "format", signer.Format.String())
			return g.print(map[string]string{"url": ref.String(), "digest": ref.Digest, "format": sf.format}, func(w io.Writer) {
				fmt.Fprintf(w, "signed %s (%s format)\n", ref, sf.format)
			})
		},
	}
	sf.register(cmd)
	return cmd
}

func newGenerateKeyCmd(g *globals) *cobra.Command {
	var prefix string
	cmd := &cobra.Command{
		Use:   "generate-key",
		Short: "Write a cosign key pair (PREFIX.key encrypted with COSIGN_PASSWORD, PREFIX.pub)",
		Example: `  COSIGN_PASSWORD=change-me berth generate-key --prefix cosign
  # CI signs with cosign.key; devices verify with cosign.pub`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pw, err := cosignPassword()
			if err != nil {
				return err
			}
			priv, pub, err := cosign.GenerateKeyPair(pw)
			if err != nil {
				return err
			}
			for _, f := range []struct {
				path string
				data []byte
				mode os.FileMode
			}{{prefix + ".key", priv, 0o600}, {prefix + ".pub", pub, 0o644}} {
				fh, err := os.OpenFile(f.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.mode)
				if err != nil {
					return fmt.Errorf("write %s (remove it first to replace the key): %w", f.path, err)
				}
				_, err = fh.Write(f.data)
				if cerr := fh.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					return err
				}
			}
			return g.print(map[string]string{"privateKey": prefix + ".key", "publicKey": prefix + ".pub"}, func(w io.Writer) {
				fmt.Fprintf(w, "wrote %s.key (keep it secret) and %s.pub (give it to devices)\n", prefix, prefix)
			})
		},
	}
	cmd.Flags().StringVar(&prefix, "prefix", "cosign", "file name prefix for the key pair")
	return cmd
}
