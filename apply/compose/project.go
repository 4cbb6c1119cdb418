package compose

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/dotenv"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/docker/compose/v5/pkg/api"

	"github.com/berth-dev/berth/state"
)

// ProjectName is the Compose project of an app of a source:
// berth-<source>-<app>, lowercased, every character other than [a-z0-9_-]
// replaced by '-'. Source and app names are DNS labels, so this is normally
// just the concatenation; Apply refuses to touch a project of that name
// that another source or app owns.
func ProjectName(source, app string) string {
	s := strings.ToLower("berth-" + source + "-" + app)
	b := []byte(s)
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' && c != '-' {
			b[i] = '-'
		}
	}
	return string(b)
}

// appProject is an app's project loaded from a revision, labelled and ready
// to be brought up.
type appProject struct {
	project *types.Project
	// hashes are the LabelConfigHash of every service.
	hashes map[string]string
}

// revisionDirPlaceholder replaces the revision folder in what is hashed, so
// that the hash does not depend on where the revision is extracted.
const revisionDirPlaceholder = "${BERTH_REVISION_DIR}"

// load loads the project of app from rev.Dir with compose-go, the way the
// Compose CLI does, and labels it. The interpolation environment is the
// app's Compose.Env (values the source gives, such as Margo parameters)
// with the device's env file for the app over it, and nothing else. Its
// steps: find the Compose files in the revision, read the environment
// (readEnv), load the project (loadProject), then label and hash its
// services (labelServices) and label its networks and volumes
// (labelResources).
func (a *Applier) load(ctx context.Context, rev state.Revision, app state.App) (*appProject, error) {
	if app.Compose == nil {
		return nil, fmt.Errorf("app %q has no compose section", app.Name)
	}
	name := ProjectName(rev.Source, app.Name)
	root, err := filepath.Abs(rev.Dir)
	if err != nil {
		return nil, fmt.Errorf("revision folder %s: %w", rev.Dir, err)
	}
	files, err := app.Compose.ConfigFiles(os.DirFS(root))
	if err != nil {
		return nil, fmt.Errorf("revision %s: %w", rev.Digest, err)
	}
	paths := make([]string, len(files))
	for i, f := range files {
		paths[i] = filepath.Join(root, filepath.FromSlash(f))
	}
	workDir := filepath.Join(root, filepath.FromSlash(app.Compose.Path))

	envFile, envData, env, err := a.readEnv(app)
	if err != nil {
		return nil, err
	}
	project, err := loadProject(ctx, paths, workDir, name, env, rev, app)
	if err != nil {
		return nil, err
	}
	ap := &appProject{project: project, hashes: map[string]string{}}
	if err := labelServices(ap, rev, app, root, envFile, envData); err != nil {
		return nil, err
	}
	labelResources(project, rev, app)
	return ap, nil
}

// readEnv reads the device's env file of app, <EnvDir>/<app>.env, and
// returns its path and content (both empty when there is none) and the
// interpolation environment: the app's Compose.Env with the file's
// variables over it.
func (a *Applier) readEnv(app state.App) (path string, data []byte, vars map[string]string, err error) {
	envFile := filepath.Join(a.opts.EnvDir, app.Name+".env")
	envData, err := os.ReadFile(envFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		envFile, envData = "", nil
	case err != nil:
		return "", nil, nil, fmt.Errorf("read the env file of app %q: %w", app.Name, err)
	}
	env := maps.Clone(app.Compose.Env)
	if env == nil {
		env = map[string]string{}
	}
	if envFile != "" {
		fileEnv, err := parseEnvFile(envData)
		if err != nil {
			return "", nil, nil, fmt.Errorf("env file %s: %w", envFile, err)
		}
		maps.Copy(env, fileEnv)
	}
	return envFile, envData, env, nil
}

// loadProject loads the project name from the Compose files paths, in
// workDir, interpolated with env only, as the Compose CLI does: the
// services' environment resolved, unused resources dropped.
func loadProject(ctx context.Context, paths []string, workDir, name string, env map[string]string, rev state.Revision, app state.App) (*types.Project, error) {
	po, err := cli.NewProjectOptions(paths,
		cli.WithWorkingDirectory(workDir),
		cli.WithName(name),
		// Like the CLI: resolve the services' environment after loading.
		cli.WithoutEnvironmentResolution,
	)
	if err != nil {
		return nil, fmt.Errorf("compose project %s: %w", name, err)
	}
	// Set directly rather than with cli.WithEnvFiles, which falls back to
	// a .env of the working folder: the artifact's .env is never read.
	po.Environment = env
	project, err := po.LoadProject(ctx)
	if err != nil {
		return nil, fmt.Errorf("load compose project of app %q from %s (revision %s): %w", app.Name, app.Compose.Path, rev.Digest, err)
	}
	project, err = project.WithServicesEnvironmentResolved(true)
	if err != nil {
		return nil, fmt.Errorf("load compose project of app %q: %w", app.Name, err)
	}
	return project.WithoutUnnecessaryResources(), nil
}

// labelServices makes every service of ap's project run its image as it
// is (no build, no pull), hashes its configuration (serviceHash, with the
// app's Compose.Env and the env file's content, into ap.hashes and
// LabelConfigHash) and sets the labels the Compose CLI and berth put on
// its containers. A service without an image is an error.
func labelServices(ap *appProject, rev state.Revision, app state.App, root, envFile string, envData []byte) error {
	project := ap.project
	for sname, s := range project.Services {
		if s.Image == "" {
			return fmt.Errorf("app %q: service %q has no image: berth does not build images on devices; set image: (the publishing side pins it to a digest)", app.Name, sname)
		}
		// Images are made present before up (see ensureImages): Compose
		// itself must neither build nor pull.
		s.Build = nil
		s.PullPolicy = types.PullPolicyNever
		h, err := serviceHash(s, root, append(envBytes(app.Compose.Env), envData...))
		if err != nil {
			return fmt.Errorf("app %q: service %q: %w", app.Name, sname, err)
		}
		ap.hashes[sname] = h
		if s.Labels == nil {
			s.Labels = types.Labels{}
		}
		s.Labels[LabelConfigHash] = h
		// What the Compose CLI sets (without these, Start finds no
		// container to start), and berth's own labels. Custom labels are
		// not part of Compose's configuration hash.
		s.CustomLabels = map[string]string{
			api.ProjectLabel:     project.Name,
			api.ServiceLabel:     sname,
			api.VersionLabel:     api.ComposeVersion,
			api.WorkingDirLabel:  project.WorkingDir,
			api.ConfigFilesLabel: strings.Join(project.ComposeFiles, ","),
			api.OneoffLabel:      "False",
			LabelSource:          rev.Source,
			LabelApp:             app.Name,
			LabelRevision:        rev.Digest,
		}
		if envFile != "" {
			s.CustomLabels[api.EnvironmentFileLabel] = envFile
		}
		project.Services[sname] = s
	}
	return nil
}

// labelResources labels the networks and volumes the project creates
// (not the external ones) with the source and the app.
func labelResources(project *types.Project, rev state.Revision, app state.App) {
	for k, n := range project.Networks {
		if !n.External {
			n.CustomLabels = n.CustomLabels.Add(LabelSource, rev.Source).Add(LabelApp, app.Name)
			project.Networks[k] = n
		}
	}
	for k, v := range project.Volumes {
		if !v.External {
			v.CustomLabels = v.CustomLabels.Add(LabelSource, rev.Source).Add(LabelApp, app.Name)
			project.Volumes[k] = v
		}
	}
}

// parseEnvFile parses the device's env file of an app, the way the Compose
// CLI reads --env-file, except that a variable it names without a value is
// never looked up in the agent's own environment, and that a line without
// a name ("=value", which compose-go reads as the variable "") is an error.
func parseEnvFile(data []byte) (map[string]string, error) {
	env, err := dotenv.UnmarshalBytesWithLookup(data, func(string) (string, bool) { return "", false })
	if err != nil {
		return nil, err
	}
	if v, ok := env[""]; ok {
		return nil, fmt.Errorf("a line sets %q without a variable name", v)
	}
	for k := range env {
		// dotenv takes "A\tB: v" (the YAML-like form) as the name "A\tB".
		if strings.ContainsAny(k, "= \t\r\n\x00") {
			return nil, fmt.Errorf("the variable name %q has a blank, '=' or NUL in it: write one NAME=value per line", k)
		}
	}
	return env, nil
}

// serviceHash is LabelConfigHash: the sha256 of the service's
// configuration as Compose hashes it (without build, pull policy, scale
// and depends_on), the revision folder replaced by a placeholder, and of
// the env file's content.
func serviceHash(s types.ServiceConfig, root string, envData []byte) (string, error) {
	s.Build = nil
	s.PullPolicy = ""
	s.Scale = nil
	if s.Deploy != nil {
		d := *s.Deploy
		d.Replicas = nil
		s.Deploy = &d
	}
	s.DependsOn = nil
	s.Profiles = nil
	if _, ok := s.Labels[LabelConfigHash]; ok {
		s.Labels = maps.Clone(s.Labels)
		delete(s.Labels, LabelConfigHash)
	}
	b, err := json.Marshal(s)
	if err != nil {
		return "", err
	}
	b = bytes.ReplaceAll(b, []byte(root), []byte(revisionDirPlaceholder))
	h := sha256.New()
	h.Write(b)
	h.Write([]byte{0})
	h.Write(envData)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// envBytes renders env as sorted KEY=VALUE lines for the configuration
// hash; nil for an empty env, so that apps without one hash as before.
func envBytes(env map[string]string) []byte {
	if len(env) == 0 {
		return nil
	}
	var b bytes.Buffer
	for _, k := range slices.Sorted(maps.Keys(env)) {
		b.WriteString(k + "=" + env[k] + "\n")
	}
	b.WriteByte(0)
	return b.Bytes()
}
