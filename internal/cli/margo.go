package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/margo/pack"
	"github.com/berth-dev/berth/source/oci"
)

func newMargoCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "margo",
		Short: "Publish Margo application packages and Compose Archives",
		Long: `Build and push what a Margo Workload Fleet Manager deploys (Margo 1.0.0-rc.3):
application packages (an ApplicationDescription and its resources) and their
components, Compose Archives "the OCI way" and Helm charts. Both are
reproducible: the same folder always gives the same digests. Like 'berth
push', every manifest is pushed by digest, signed (with --sign-key), and
only then tagged: a signature that fails leaves no tag, so devices with a
verify policy never see an unsigned component under its revision.`,
		Example: `  berth margo compose-archive ./collector oci://registry.example.com/acme/collector:1.4.0 --sign-key env://COSIGN_KEY
  berth margo package ./line-monitor oci://registry.example.com/acme/apps/line-monitor --sign-key env://COSIGN_KEY`,
	}
	cmd.AddCommand(newMargoPackageCmd(g), newMargoComposeArchiveCmd(g))
	return cmd
}

func newMargoComposeArchiveCmd(g *globals) *cobra.Command {
	var name string
	var annotations []string
	var sf signFlags
	cmd := &cobra.Command{
		Use:   "compose-archive DIR oci://HOST/REPO:REVISION",
		Short: "Pack a Compose project as a Margo Compose Archive and push it",
		Long: `Pack DIR, a folder holding compose.yaml (and the files it references by
relative paths), as a tar+gzip with one top-level folder, and push it as an
OCI artifact of type application/vnd.org.margo.component.compose+json with
one layer application/vnd.org.margo.component.compose.tar+gzip, annotated
org.margo.component.type=compose and org.margo.component.version. The tag is
the component revision: a SemVer 2.0 version without a leading v, with _ for
+ (OCI tags cannot hold +).`,
		Example: `  berth margo compose-archive ./collector oci://registry.example.com/acme/collector:1.4.0 --sign-key env://COSIGN_KEY
  berth margo compose-archive ./collector oci://registry.example.com/acme/collector:1.4.0_build.7 --output json`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := oci.ParseReference(args[1])
			if err != nil {
				return err
			}
			ann, err := parseAnnotations(annotations)
			if err != nil {
				return err
			}
			signer, err := sf.load()
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.step(cmd.Context())
			defer cancel()
			p, err := pack.PushComposeArchive(ctx, c, pack.ComposeOptions{Dir: args[0], Name: name, Ref: ref, Annotations: ann, Signer: signer})
			if err != nil {
				return err
			}
			g.log.Info("pushed Compose Archive", "url", p.URL, "signed", p.Signed)
			return g.print(p, func(w io.Writer) { printPushed(w, *p, sf) })
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "top-level folder of the archive (default: the last segment of the repository)")
	cmd.Flags().StringArrayVar(&annotations, "annotation", nil, "layer annotation KEY=VALUE, such as org.opencontainers.image.description=... (repeatable)")
	sf.register(cmd)
	return cmd
}

func newMargoPackageCmd(g *globals) *cobra.Command {
	var artifactType string
	var sf signFlags
	cmd := &cobra.Command{
		Use:   "package DIR oci://HOST/REPO[:VERSION]",
		Short: "Push a Margo application package and the components it references",
		Long: `Push the application package of DIR: margo.yaml (the ApplicationDescription)
and the catalog resources it names (icon, descriptionFile, licenseFile,
releaseNotes), each a layer of the Margo media types, in an OCI artifact of
type application/vnd.margo.app.v1+json tagged with metadata.version.

The components of its deployment profiles are built from DIR first when it
holds them: compose/<component>/ (a Compose project, pushed as a Compose
Archive) and helm/<component>/ (a chart, pushed with Helm's media types;
Chart.yaml's version must be the revision). Each goes to the repository and
revision the description gives. A component without a folder must already
be in its registry.`,
		Example: `  # DIR: margo.yaml, resources/icon.png, compose/collector/compose.yaml, helm/collector/Chart.yaml
  berth margo package ./line-monitor oci://registry.example.com/acme/apps/line-monitor --sign-key env://COSIGN_KEY
  berth margo package ./line-monitor oci://registry.example.com/acme/apps/line-monitor:1.4.0 --output json`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := oci.ParseReference(args[1])
			if err != nil {
				return err
			}
			signer, err := sf.load()
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.step(cmd.Context())
			defer cancel()
			res, err := pack.PushPackage(ctx, c, pack.PackageOptions{Dir: args[0], Ref: ref, ArtifactType: artifactType, Signer: signer})
			if err != nil {
				return err
			}
			g.log.Info("pushed Margo application package", "url", res.Package.URL, "components", len(res.Components))
			return g.print(res, func(w io.Writer) {
				fmt.Fprintf(w, "application %s %s\n", res.ApplicationID, res.Version)
				for _, p := range res.Components {
					printPushed(w, p, sf)
				}
				printPushed(w, res.Package, sf)
			})
		},
	}
	cmd.Flags().StringVar(&artifactType, "artifact-type", pack.AppArtifactType, "artifact type of the package manifest (some Margo drafts write application/vnd.org.margo.app.v1+json)")
	sf.register(cmd)
	return cmd
}

// load loads the signing key when one is given (nil when not): before
// anything is pushed, so that a missing COSIGN_PASSWORD or a bad key
// uploads nothing.
func (s signFlags) load() (*deliver.Signer, error) {
	if s.key == "" {
		return nil, nil
	}
	return s.signer()
}

func printPushed(w io.Writer, p pack.Pushed, sf signFlags) {
	verb := "pushed"
	if !p.Built {
		verb = "found "
	}
	what := p.Kind
	if p.Component != "" {
		what += " " + p.Component
	}
	signed := ""
	if p.Signed {
		signed = " (signed, " + sf.format + ")"
	}
	fmt.Fprintf(w, "%s %-18s %s%s\n", verb, what, p.URL, signed)
}
