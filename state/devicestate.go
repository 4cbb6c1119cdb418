// Package state holds the contracts every other package builds on: berth.yaml,
// the desired state of a device, parsed strictly; the revision an applier
// receives; and the reports appliers return. It imports no other package of
// berth but internal helpers.
//
// A desired state lists apps, each deployed either with Docker Compose or
// with Helm, and optional named extensions that have the same shape as an
// app and are off unless a device enables them:
//
//	apiVersion: berth.dev/v1
//	kind: DeviceState
//	apps:
//	  - name: web
//	    compose: {path: apps/web}
//	    prune: {volumes: false}
//	  - name: metrics
//	    helm:
//	      chart: oci://ghcr.io/acme/charts/metrics
//	      version: 2.3.1
//	      digest: sha256:…            # written by the lock step
//	      namespace: metrics
//	      valuesFiles: [apps/metrics/values.yaml]
//	      maxHistory: 5               # release revisions kept
//	extensions:
//	  usbguard: {compose: {path: extensions/usbguard}}
//	rollout:                          # optional: see Rollout
//	  waves:
//	    - {name: canary, selector: {ring: canary}}
//	    - {name: early, percent: 10, after: 2h}
//	    - {name: all, percent: 100, after: 24h}
//
// Parsing is strict: unknown fields, duplicate keys, values of the wrong
// type and invalid values are errors, every one located at a line of the
// file, and all of them are reported at once. YAML aliases and merge keys
// are refused except inside helm.values.
package state

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"time"

	"github.com/berth-dev/berth/internal/yamlstrict"
)

const (
	// APIVersion is the only apiVersion of a desired state understood here.
	APIVersion = "berth.dev/v1"
	// Kind is the kind of a desired state.
	Kind = "DeviceState"
	// FileName is the name of the desired state at the root of a device
	// repository and of an artifact.
	FileName = "berth.yaml"
	// MaxFileSize is the largest berth.yaml Load reads.
	MaxFileSize = 1 << 20
	// DefaultTimeout is the Helm timeout of an app that sets none.
	DefaultTimeout = 5 * time.Minute
	// DefaultMaxHistory is the Helm release history bound of an app that
	// sets none.
	DefaultMaxHistory = 5
	// MaxMaxHistory is the largest maxHistory accepted.
	MaxMaxHistory = 1000
)

// DeviceState is a parsed and validated berth.yaml.
type DeviceState struct {
	// APIVersion is always APIVersion.
	APIVersion string
	// Kind is always Kind.
	Kind string
	// Apps are always applied, in this order.
	Apps []App
	// Extensions are applied only on the devices that enable them by
	// name. They are in file order; Name is the key they are listed under.
	Extensions []App
	// Rollout is the release's rollout plan; nil when it has none, and
	// every device then adopts the release as soon as it sees it.
	Rollout *Rollout
}

// App is one application of a desired state: exactly one of Compose and
// Helm is set.
type App struct {
	// Name is unique among apps and extensions, a DNS label of at most 53
	// characters (so that it is also a valid Helm release name).
	Name string
	// Compose is set for an app deployed with Docker Compose.
	Compose *Compose
	// Helm is set for an app deployed with Helm.
	Helm *Helm
	// Prune is only valid for Compose apps.
	Prune Prune
}

// Compose is a Docker Compose project.
type Compose struct {
	// Path is the folder of the project, relative to the root.
	Path string
	// Files, when set, name the Compose files to load, in order, relative
	// to Path. See ConfigFiles.
	Files []string
	// Env is interpolation environment the source gives the project (the
	// parameters of a Margo deployment); berth.yaml cannot set it. The
	// device's env file for the app goes over it.
	Env map[string]string
	// Timeout, when set, bounds the app's start and the wait for its
	// containers instead of the applier's own wait timeout (a Margo
	// component's timeout); berth.yaml cannot set it.
	Timeout time.Duration
	// NoWait applies the app once its containers are started, without
	// waiting for them to run and be healthy (a Margo component with
	// wait: false); a container that already exited still fails it.
	// berth.yaml cannot set it.
	NoWait bool
}

// Prune says what removing a Compose app deletes besides its containers
// and networks.
type Prune struct {
	// Volumes also deletes the named volumes of the project.
	Volumes bool
}

// Helm is a Helm release. Exactly one of Chart and Path is set.
type Helm struct {
	// Chart is an oci:// URL of a chart repository, without tag.
	Chart string
	// Version is the exact version of Chart; required with Chart.
	Version string
	// Digest is the sha256 digest of the manifest of Chart at Version,
	// written by the lock step at push time; empty when not locked.
	Digest string
	// Path is a chart folder relative to the root.
	Path string
	// Namespace of the release; empty means the applier's default.
	Namespace string
	// ReleaseName defaults to the app name.
	ReleaseName string
	// Values are inline values, applied after ValuesFiles.
	Values map[string]any
	// ValuesFiles are values files relative to the root, in order.
	ValuesFiles []string
	// Wait for the release's resources to be ready; default true.
	Wait bool
	// Timeout of an install or upgrade; default DefaultTimeout.
	Timeout time.Duration
	// MaxHistory bounds the revisions of the release kept in its history
	// (Helm's --history-max); default DefaultMaxHistory.
	MaxHistory int
}

// Error is one problem of a desired state: its File, Line (0 when the
// problem concerns the whole file), Field path (such as
// apps[1].helm.chart) and Msg. Its Error method returns
// "file:line: field: msg".
type Error = yamlstrict.Error

// Load reads FileName at the root of fsys and parses it. When the file does
// not exist the error wraps fs.ErrNotExist.
func Load(fsys fs.FS) (*DeviceState, error) {
	f, err := fsys.Open(FileName)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", FileName, err)
	}
	if len(data) > MaxFileSize {
		return nil, &Error{File: FileName, Msg: fmt.Sprintf("larger than %d bytes; move large values to valuesFiles", MaxFileSize)}
	}
	return Parse(FileName, data)
}

// composeNames are the files looked up in a Compose folder, in the order
// of preference of Docker Compose.
var composeNames = []string{"compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml"}

// ConfigFiles returns the Compose files of c as paths relative to the root
// of fsys, in the order they are loaded. With Files set, these are the
// files, and they must all exist. Otherwise the folder must hold exactly one
// of compose.yaml, compose.yml, docker-compose.yaml and docker-compose.yml;
// override files are never loaded implicitly: list them in Files.
func (c *Compose) ConfigFiles(fsys fs.FS) ([]string, error) {
	fi, err := fs.Stat(fsys, c.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("compose folder %q does not exist", c.Path)
	case err != nil:
		return nil, fmt.Errorf("compose folder %q: %w", c.Path, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("compose path %q is not a folder", c.Path)
	}
	if len(c.Files) > 0 {
		var out []string
		var errs []error
		for _, f := range c.Files {
			p := path.Join(c.Path, f)
			if err := RegularFile(fsys, p); err != nil {
				errs = append(errs, fmt.Errorf("compose file %w", err))
				continue
			}
			out = append(out, p)
		}
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		return out, nil
	}
	var found []string
	for _, n := range composeNames {
		p := path.Join(c.Path, n)
		if RegularFile(fsys, p) == nil {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("no compose.yaml, compose.yml, docker-compose.yaml or docker-compose.yml in %q: add one, or list the files in compose.files", c.Path)
	case 1:
		return found, nil
	default:
		return nil, fmt.Errorf("both %s and %s in %q: keep one, or list the files to load in compose.files", path.Base(found[0]), path.Base(found[1]), c.Path)
	}
}

// RegularFile checks that p is a regular file of fsys, with an error that
// names it otherwise.
func RegularFile(fsys fs.FS, p string) error {
	fi, err := fs.Stat(fsys, p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%q does not exist", p)
	case err != nil:
		return fmt.Errorf("%q: %w", p, err)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%q is not a regular file", p)
	}
	return nil
}
