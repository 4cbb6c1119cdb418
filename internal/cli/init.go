package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/scaffold"
)

func newInitCmd(g *globals) *cobra.Command {
	var o scaffold.Options
	cmd := &cobra.Command{
		Use:   "init [DIR]",
		Short: "Scaffold a device repository: berth.yaml, a Compose app, CI pipelines and the device's agent.yaml",
		Long: `Write a new device repository into DIR (default: the current folder): a
berth.yaml with one Compose app, apps/<app>/compose.yaml, a .berthignore, a
GitHub Actions workflow that pushes and signs keyless with cosign, a GitLab
CI pipeline that pushes and signs with a key from a CI secret, and
device/agent.yaml, the configuration a device tracks the repository with.
Existing files are never overwritten: init refuses and names them.`,
		Example: `  berth init fleet --repository oci://registry.example.com/fleet/line-3 --image registry.example.com/acme/web:1.0.0
  cd fleet && git init && git add -A && git commit -m "desired state"
  berth push . oci://registry.example.com/fleet/line-3:1.0.0 --sign-key cosign.key`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				o.Dir = args[0]
			}
			files, err := scaffold.Write(o)
			if err != nil {
				return err
			}
			return g.print(map[string]any{"dir": o.Dir, "files": files}, func(w io.Writer) {
				for _, f := range files {
					fmt.Fprintf(w, "wrote %s\n", f)
				}
				fmt.Fprintf(w, "\nnext: commit it (git init && git add -A && git commit), make a key (berth generate-key),\n"+
					"push it (berth push %s %s:1.0.0 --sign-key cosign.key),\n"+
					"and on the device: berth agent --config device/agent.yaml --check-config\n", o.Dir, o.Repository)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.App, "app", scaffold.DefaultApp, "name of the Compose app")
	f.StringVar(&o.Image, "image", scaffold.DefaultImage, "the app's container image")
	f.StringVar(&o.Repository, "repository", scaffold.DefaultRepository, "where CI pushes the desired state: oci://HOST/PATH")
	f.StringVar(&o.Source, "source", "", "the source's name in agent.yaml (default: the repository's last path element)")
	f.BoolVar(&o.Insecure, "plain-http", false, "the registry speaks plain HTTP (lab only): agent.yaml says insecure: true")
	return cmd
}
