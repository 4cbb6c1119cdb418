// Package scaffold writes a new device repository for `berth init`: a
// berth.yaml with one Compose app, its compose file, a .berthignore, CI
// pipelines that push and sign (GitHub Actions signing keyless with cosign,
// GitLab CI with a key from a CI secret) and the agent.yaml a device tracks
// it with. It never overwrites a file.
package scaffold

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/template"
)

// Options say what to scaffold.
type Options struct {
	// Dir is the repository folder; created when missing.
	Dir string
	// App names the Compose app: a DNS label. Default "web".
	App string
	// Image is the app's container image. Default
	// registry.example.com/acme/web:1.0.0.
	Image string
	// Repository is where CI pushes the desired state, oci://HOST/PATH.
	// Default oci://registry.example.com/fleet/devices.
	Repository string
	// Source names the source in the device's agent.yaml. Default: the
	// repository's last path element.
	Source string
	// Insecure writes insecure: true into agent.yaml, for a plain-HTTP
	// lab registry.
	Insecure bool
}

// Defaults of Options.
const (
	DefaultApp        = "web"
	DefaultImage      = "registry.example.com/acme/web:1.0.0"
	DefaultRepository = "oci://registry.example.com/fleet/devices"
)

var label = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Write writes the repository's files and returns their paths, relative
// to Dir, in the order written. When any of them exists, it writes
// nothing and returns an error wrapping ErrExists that lists them.
func Write(o Options) ([]string, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	files, err := render(o)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	var exist []string
	for _, name := range names {
		if _, err := os.Lstat(filepath.Join(o.Dir, name)); err == nil {
			exist = append(exist, name)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("check %s: %w", filepath.Join(o.Dir, name), err)
		}
	}
	if len(exist) > 0 {
		return nil, fmt.Errorf("%w in %s: %s (move them aside, or init another folder)", ErrExists, o.Dir, strings.Join(exist, ", "))
	}
	for _, name := range names {
		p := filepath.Join(o.Dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		// O_EXCL: a file that appeared since the check is not overwritten.
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return nil, fmt.Errorf("write %s: %w", p, err)
		}
		_, err = f.Write(files[name])
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("write %s: %w", p, err)
		}
	}
	return names, nil
}

func (o *Options) defaults() error {
	if o.Dir == "" {
		o.Dir = "."
	}
	if o.App == "" {
		o.App = DefaultApp
	}
	if o.Image == "" {
		o.Image = DefaultImage
	}
	if o.Repository == "" {
		o.Repository = DefaultRepository
	}
	if !label.MatchString(o.App) {
		return fmt.Errorf("%w: app name %q: use lowercase letters, digits and '-'", ErrInvalid, o.App)
	}
	host, path, ok := strings.Cut(strings.TrimPrefix(o.Repository, "oci://"), "/")
	if !strings.HasPrefix(o.Repository, "oci://") || !ok || host == "" || path == "" || strings.ContainsAny(path, ":@ \n\t") {
		return fmt.Errorf("%w: repository %q: give oci://HOST/PATH, without tag or digest", ErrInvalid, o.Repository)
	}
	if strings.ContainsAny(o.Image, " \n\t\"") {
		return fmt.Errorf("%w: image %q", ErrInvalid, o.Image)
	}
	if o.Source == "" {
		o.Source = o.Repository[strings.LastIndex(o.Repository, "/")+1:]
	}
	if !label.MatchString(o.Source) {
		return fmt.Errorf("%w: source name %q (from the repository's last element): pass one made of lowercase letters, digits and '-'", ErrInvalid, o.Source)
	}
	return nil
}

// render returns the content of every file by path.
func render(o Options) (map[string][]byte, error) {
	data := struct {
		Options
		// Registry is the host of Repository; RepoPath the rest.
		Registry, RepoPath string
	}{Options: o}
	rest := strings.TrimPrefix(o.Repository, "oci://")
	data.Registry, data.RepoPath, _ = strings.Cut(rest, "/")
	out := map[string][]byte{}
	for name, text := range templates {
		t, err := template.New(name).Delims("[[", "]]").Parse(text)
		if err != nil {
			return nil, fmt.Errorf("scaffold template %s: %w", name, err)
		}
		var b bytes.Buffer
		if err := t.Execute(&b, data); err != nil {
			return nil, fmt.Errorf("scaffold template %s: %w", name, err)
		}
		out[strings.ReplaceAll(name, "APP", o.App)] = b.Bytes()
	}
	return out, nil
}
