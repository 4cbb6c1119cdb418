package cli

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/source/oci"
)

func newTagCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "tag REF NEWTAG",
		Short: "Point another tag at an artifact (promote canary to stable)",
		Example: `  # promote what canary points at to stable, without downloading it
  berth tag oci://registry.example.com/fleet/line-3:canary stable`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := oci.ParseReference(args[0])
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.step(cmd.Context())
			defer cancel()
			desc, err := c.Tag(ctx, ref, args[1])
			if err != nil {
				return err
			}
			out := ref.WithTag(args[1])
			return g.print(map[string]string{"url": out.String(), "digest": desc.Digest.String()}, func(w io.Writer) {
				fmt.Fprintf(w, "tagged %s as %s\n", ref.WithDigest(desc.Digest.String()), out)
			})
		},
	}
}

func newListCmd(g *globals) *cobra.Command {
	var semverRange, filter string
	cmd := &cobra.Command{
		Use:   "list oci://HOST/REPO",
		Short: "List the artifact tags of a repository (signature tags left out)",
		Example: `  berth list oci://registry.example.com/fleet/line-3
  berth list oci://registry.example.com/fleet/line-3 --semver '>=1.4.0 <2.0.0'
  berth list oci://registry.example.com/fleet/line-3 --filter '^main-' --output json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := oci.ParseReference(args[0])
			if err != nil {
				return err
			}
			var rng *semver.Constraints
			if semverRange != "" {
				if rng, err = semver.NewConstraint(semverRange); err != nil {
					return fmt.Errorf("--semver %q: %w", semverRange, err)
				}
			}
			var re *regexp.Regexp
			if filter != "" {
				if re, err = regexp.Compile(filter); err != nil {
					return fmt.Errorf("--filter %q: %w", filter, err)
				}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.step(cmd.Context())
			defer cancel()
			tags, err := c.Tags(ctx, ref)
			if err != nil {
				return err
			}
			listed := len(tags)
			tags = slices.DeleteFunc(tags, func(t string) bool {
				if re != nil && !re.MatchString(t) {
					return true
				}
				if rng != nil {
					v, err := semver.NewVersion(t)
					return err != nil || !rng.Check(v)
				}
				return false
			})
			if rng != nil {
				slices.SortFunc(tags, func(a, b string) int {
					return semver.MustParse(a).Compare(semver.MustParse(b))
				})
			} else {
				slices.Sort(tags)
			}
			if tags == nil {
				tags = []string{}
			}
			if len(tags) == 0 {
				fmt.Fprintln(g.stderr, noTagsMessage(oci.Scheme+ref.Repo(), listed, semverRange, filter))
			}
			return g.print(tags, func(w io.Writer) {
				for _, t := range tags {
					fmt.Fprintln(w, t)
				}
			})
		},
	}
	cmd.Flags().StringVar(&semverRange, "semver", "", "only tags that are semantic versions in this range (Masterminds syntax), sorted by version")
	cmd.Flags().StringVar(&filter, "filter", "", "only tags matching this regular expression")
	return cmd
}

func newLoginCmd(g *globals) *cobra.Command {
	var username, password string
	var passwordStdin bool
	cmd := &cobra.Command{
		Use:   "login HOST",
		Short: "Log in to a registry and store the credentials in the Docker config",
		Example: `  echo "$REGISTRY_TOKEN" | berth login registry.example.com -u ci --password-stdin
  berth login 127.0.0.1:5000 -u admin -p secret --ca-file ca.pem`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if passwordStdin {
				line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if err != nil && err != io.EOF {
					return fmt.Errorf("read password from stdin: %w", err)
				}
				password = strings.TrimRight(line, "\r\n")
			}
			if username == "" || password == "" {
				return fmt.Errorf("give --username and --password (or --password-stdin)")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.step(cmd.Context())
			defer cancel()
			host := strings.TrimPrefix(args[0], oci.Scheme)
			if err := c.Login(ctx, host, username, password); err != nil {
				return err
			}
			where := g.dockerConfig
			if where == "" {
				where = "the Docker config"
			}
			return g.print(map[string]string{"registry": host, "storedIn": where}, func(io.Writer) {
				fmt.Fprintf(g.stderr, "Login succeeded: credentials for %s stored in %s\n", host, where)
			})
		},
	}
	cmd.Flags().StringVarP(&username, "username", "u", "", "user name")
	cmd.Flags().StringVarP(&password, "password", "p", "", "password (prefer --password-stdin: arguments show in process lists)")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from standard input")
	return cmd
}

// noTagsMessage says, on stderr, why list printed nothing.
func noTagsMessage(repo string, listed int, semverRange, filter string) string {
	var by []string
	if semverRange != "" {
		by = append(by, fmt.Sprintf("--semver %q", semverRange))
	}
	if filter != "" {
		by = append(by, fmt.Sprintf("--filter %q", filter))
	}
	if len(by) == 0 {
		return fmt.Sprintf("%s has no artifact tags", repo)
	}
	return fmt.Sprintf("no tag of %s matches %s (%d tags listed; berth list %s shows them all)", repo, strings.Join(by, " and "), listed, repo)
}
