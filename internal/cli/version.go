package cli

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// versionInfo is what `berth version` prints.
type versionInfo struct {
	Version   string   `json:"version"`
	GoVersion string   `json:"goVersion"`
	Platform  string   `json:"platform"`
	Commit    string   `json:"commit,omitempty"`
	Appliers  []string `json:"appliers"`
}

func newVersionCmd(g *globals, a Agent) *cobra.Command {
	name := "berth"
	if a != nil {
		name = AgentBinary
	}
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, platform and the appliers linked in",
		Example: fmt.Sprintf(`  %s version
  %s version --output json`, name, name),
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			v := versionInfo{Version: Version, GoVersion: runtime.Version(), Platform: platform(), Appliers: []string{}}
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						v.Commit = s.Value
					}
				}
			}
			if a != nil {
				v.Appliers = append(v.Appliers, a.Appliers()...)
			}
			return g.print(v, func(w io.Writer) {
				fmt.Fprintf(w, "%s %s (%s, %s)\n", name, v.Version, v.Platform, v.GoVersion)
				if a != nil {
					fmt.Fprintf(w, "appliers: %v\n", v.Appliers)
				}
			})
		},
	}
}

// platform is GOOS/GOARCH[/vARM].
func platform() string {
	p := runtime.GOOS + "/" + runtime.GOARCH
	if runtime.GOARCH == "arm" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "GOARM" {
					p += "/v" + s.Value
				}
			}
		}
	}
	return p
}
