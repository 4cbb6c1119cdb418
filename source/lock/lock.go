// Package lock pins every chart and image a desired state references to a
// digest before it is packed and signed.
//
// Lock reads berth.yaml and, for every app and every extension:
//
//   - in each Compose file of a Compose app, rewrites each
//     services.<name>.image to its reference as written, tag included
//     (latest when none is), followed by @sha256:<digest>. An image already
//     pinned by digest is kept as it is. Images that use variables, and
//     services that build but name no image, are errors: devices do not
//     build.
//   - for a Helm app with an oci:// chart, writes digest: after version:
//     in berth.yaml, or checks the digest already there. A chart path must
//     hold a Chart.yaml. Values files must exist and be YAML.
//
// Files are edited in place: comments, order, quoting and indentation are
// kept. The work tree is not touched: the rewritten files are returned as
// an overlay for the packer, with berth.lock.json, which lists every image
// and chart pinned:
//
//	{
//	  "apiVersion": "berth.dev/v1",
//	  "kind": "Lock",
//	  "entries": [
//	    {
//	      "app": "web",
//	      "file": "apps/web/compose.yaml",
//	      "service": "api",
//	      "kind": "image",
//	      "ref": "registry.local:5000/acme/web:1.2",
//	      "repository": "registry.local:5000/acme/web",
//	      "digest": "sha256:…"
//	    }
//	  ]
//	}
//
// The same inputs and digests always give the same bytes.
package lock

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/internal/readcap"
	"github.com/berth-dev/berth/state"
)

const (
	// LockFile is the name of the lock file Lock adds to the overlay, at
	// the root.
	LockFile = "berth.lock.json"
	// KindImage is the kind of an Entry for a container image.
	KindImage = "image"
	// KindChart is the kind of an Entry for a Helm chart.
	KindChart = "chart"
)

const (
	// maxComposeSize caps the Compose and values files read.
	maxComposeSize = 4 << 20
	// maxParallel bounds the references resolved at once.
	maxParallel = 8
)

// Resolver resolves a tagged reference to the digest of the manifest it
// points to, such as "sha256:3f1c…". For a multi-platform image that is the
// digest of the index: never pick a platform.
//
// ref is always fully qualified and tagged, without scheme: the registry
// host, the repository, ':' and the tag. docker.io stands for Docker Hub,
// whose API is served at registry-1.docker.io:
//
//	registry.local:5000/acme/web:1.2
//	docker.io/library/nginx:latest        (from image: nginx)
//	ghcr.io/acme/charts/metrics:2.3.1     (chart oci://ghcr.io/acme/charts/metrics, version 2.3.1)
//
// A '+' in a chart version becomes '_' in the tag, as Helm does. Resolve is
// called concurrently.
type Resolver interface {
	Resolve(ctx context.Context, ref string) (digest string, err error)
}

// Result is what Lock pinned.
type Result struct {
	// Overlay maps the path, relative to the locked folder, of each file to
	// pack in place of the original to its content: berth.yaml if a
	// digest was written in it, every Compose file rewritten, and LockFile.
	Overlay map[string][]byte
	// Lock lists every image and chart referenced, sorted by app, file,
	// service, kind and reference.
	Lock []Entry
	// Rollout is berth.yaml's rollout plan; nil without one.
	Rollout *state.Rollout
}

// Error is a reference that cannot be pinned, or a file that cannot be
// locked.
type Error struct {
	// File is relative to the locked folder; Line is 0 when unknown.
	File string
	Line int
	// App is the app, or the extension if Extension is set, at fault.
	App       string
	Extension bool
	// Service is the Compose service at fault, if any.
	Service string
	// Kind and Ref are the reference at fault, as written, if any.
	Kind string
	Ref  string
	// Err says what is wrong; it wraps the Resolver's error when
	// resolving failed.
	Err error
}

// Error returns, for example:
//
//	lock apps/web/compose.yaml:7 (app "web", service "api"): image "registry.local/acme/nope:1.0": not found
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("lock ")
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.App != "" {
		what := "app"
		if e.Extension {
			what = "extension"
		}
		fmt.Fprintf(&b, " (%s %q", what, e.App)
		if e.Service != "" {
			fmt.Fprintf(&b, ", service %q", e.Service)
		}
		b.WriteString(")")
	}
	b.WriteString(": ")
	if e.Ref != "" {
		fmt.Fprintf(&b, "%s %q: ", e.Kind, e.Ref)
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// Lock pins the desired state in dir, resolving tags with r. Without
// dir/berth.yaml there is nothing to lock: it returns nil and no error.
// Errors in berth.yaml are those of state.Parse; all the other
// problems are reported at once, each an *Error, joined. Files are only
// read, through links that stay inside dir.
func Lock(ctx context.Context, dir string, r Resolver) (*Result, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	defer root.Close()
	return lockFS(ctx, root.FS(), r)
}

// lockFS is Lock on a file system.
func lockFS(ctx context.Context, fsys fs.FS, r Resolver) (*Result, error) {
	data, err := readcap.File(fsys, state.FileName, state.MaxFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	st, err := state.Parse(state.FileName, data)
	if err != nil {
		return nil, err
	}
	doc, err := decodeYAML(data)
	if err != nil || doc == nil {
		return nil, fmt.Errorf("lock: %s: %v", state.FileName, err)
	}
	l := &locker{fsys: fsys, files: map[string]*parsedFile{}}
	units, err := appNodes(st, doc)
	if err != nil {
		return nil, err
	}
	for _, u := range units {
		if u.app.Compose != nil {
			l.scanCompose(u)
		} else {
			l.scanHelm(u)
		}
	}
	l.resolve(ctx, r)
	l.pin()
	if len(l.errs) > 0 {
		return nil, l.err()
	}
	return l.result(data, doc, st)
}

// locker holds the state of one Lock.
type locker struct {
	fsys    fs.FS
	errs    []*Error
	files   map[string]*parsedFile // Compose files by path
	sites   []*site                // references to resolve
	results map[string]resolution  // by reference resolved
	entries []Entry
	inserts []insert // digests to write in berth.yaml
}

// parsedFile is a Compose file read once, and the new values of its
// images.
type parsedFile struct {
	cf     *composeFile
	issues []issue
	err    error
	values map[*yaml.Node]string
}

// unit is an app or an extension, with its node in berth.yaml.
type unit struct {
	app  *state.App
	ext  bool
	node *yaml.Node
}

// site is a reference to resolve.
type site struct {
	u       unit
	entry   Entry // without digest
	resolve string
	line    int
	// An image: its file and scalar, and its reference with a tag.
	file    *parsedFile
	node    *yaml.Node
	written string
	// A chart: its helm: mapping and version: value.
	helm, version *yaml.Node
}

type resolution struct {
	digest string
	err    error
}

// insert is a digest to write after a version.
type insert struct {
	helm, version *yaml.Node
	digest        string
}

func (l *locker) fail(u unit, file string, line int, service, kind, ref string, err error) {
	l.errs = append(l.errs, &Error{File: file, Line: line, App: u.app.Name, Extension: u.ext, Service: service, Kind: kind, Ref: ref, Err: err})
}

// err joins the errors, sorted by file and line.
func (l *locker) err() error {
	sort.SliceStable(l.errs, func(i, j int) bool {
		a, b := l.errs[i], l.errs[j]
		if a.File != b.File {
			return a.File < b.File
		}
		return a.Line < b.Line
	})
	errs := make([]error, len(l.errs))
	for i, e := range l.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// appNodes pairs the apps and extensions of st with their nodes in doc,
// which state.Parse validated: no aliases, the expected kinds.
func appNodes(st *state.DeviceState, doc *yaml.Node) ([]unit, error) {
	var units []unit
	root := doc.Content[0]
	_, apps := get(root, "apps")
	_, exts := get(root, "extensions")
	for i := range st.Apps {
		if apps == nil || i >= len(apps.Content) {
			return nil, errors.New("lock: berth.yaml: internal error: apps do not match")
		}
		units = append(units, unit{app: &st.Apps[i], node: apps.Content[i]})
	}
	for i := range st.Extensions {
		_, n := get(exts, st.Extensions[i].Name)
		if n == nil {
			return nil, errors.New("lock: berth.yaml: internal error: extensions do not match")
		}
		units = append(units, unit{app: &st.Extensions[i], ext: true, node: n})
	}
	return units, nil
}

// get returns the key and value of key in the mapping m, nil if absent.
func get(m *yaml.Node, key string) (k, v *yaml.Node) {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

// lineOf returns the line of the value at the path of keys under m, or of
// the deepest node found.
func lineOf(m *yaml.Node, keys ...string) int {
	line := m.Line
	for _, k := range keys {
		_, v := get(m, k)
		if v == nil {
			break
		}
		m, line = v, v.Line
	}
	return line
}

// resolve resolves every reference once, a few at a time.
func (l *locker) resolve(ctx context.Context, r Resolver) {
	var refs []string
	seen := map[string]bool{}
	for _, s := range l.sites {
		if !seen[s.resolve] {
			seen[s.resolve] = true
			refs = append(refs, s.resolve)
		}
	}
	sort.Strings(refs)
	l.results = make(map[string]resolution, len(refs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxParallel)
	for _, ref := range refs {
		if err := ctx.Err(); err != nil {
			l.results[ref] = resolution{err: err}
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d, err := r.Resolve(ctx, ref)
			if err == nil && !sha256RE.MatchString(d) {
				err = fmt.Errorf("the resolver returned %q, not a sha256 digest", d)
			}
			mu.Lock()
			l.results[ref] = resolution{digest: d, err: err}
			mu.Unlock()
		}()
	}
	wg.Wait()
}

// pin records the digest of every site, or why it has none.
func (l *locker) pin() {
	for _, s := range l.sites {
		res := l.results[s.resolve]
		e := s.entry
		if res.err != nil {
			err := res.err
			if s.resolve != e.Ref {
				err = fmt.Errorf("resolve %s: %w", s.resolve, err)
			}
			l.fail(s.u, e.File, s.line, e.Service, e.Kind, e.Ref, err)
			continue
		}
		e.Digest = res.digest
		switch e.Kind {
		case KindImage:
			s.file.values[s.node] = s.written + "@" + res.digest
		case KindChart:
			h := s.u.app.Helm
			if h.Digest != "" {
				if h.Digest != res.digest {
					l.fail(s.u, e.File, lineOf(s.helm, "digest"), "", e.Kind, e.Ref, fmt.Errorf(
						"berth.yaml pins %s but the registry has %s for this version: the tag was moved, or the digest is wrong; restore the chart, or remove digest: to pin what the registry has now",
						h.Digest, res.digest))
					continue
				}
			} else {
				h.Digest = res.digest
				l.inserts = append(l.inserts, insert{helm: s.helm, version: s.version, digest: res.digest})
			}
		}
		l.entries = append(l.entries, e)
	}
}
