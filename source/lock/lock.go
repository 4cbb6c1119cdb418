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
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"reflect"
	"sort"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"

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
}

// Entry is an image or chart pinned by Lock.
type Entry struct {
	// App is the name of the app or extension that references it.
	App string `json:"app"`
	// Extension is set when App is an extension.
	Extension bool `json:"extension,omitempty"`
	// File is the file that references it, relative to the locked folder.
	File string `json:"file"`
	// Service is the Compose service, for an image.
	Service string `json:"service,omitempty"`
	// Kind is KindImage or KindChart.
	Kind string `json:"kind"`
	// Ref is the reference as written; for a chart, its oci:// URL, ':' and
	// its version.
	Ref string `json:"ref"`
	// Repository is the fully qualified repository, such as
	// docker.io/library/nginx or ghcr.io/acme/charts/metrics: Repository,
	// '@' and Digest pull exactly what was pinned.
	Repository string `json:"repository"`
	// Digest is the sha256 digest of the manifest or index.
	Digest string `json:"digest"`
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
	data, err := readFile(fsys, state.FileName, state.MaxFileSize)
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

func (l *locker) scanCompose(u unit) {
	files, err := u.app.Compose.ConfigFiles(l.fsys)
	if err != nil {
		l.fail(u, state.FileName, lineOf(u.node, "compose", "path"), "", "", "", err)
		return
	}
	type svc struct {
		image, extends  bool
		file, build     string // where the service first appears, first builds
		line, buildLine int
	}
	svcs := map[string]*svc{}
	var order []string
	for _, f := range files {
		pf := l.compose(f)
		if pf.err != nil {
			l.fail(u, f, yamlErrLine(pf.err), "", "", "", pf.err)
			continue
		}
		for _, is := range pf.issues {
			l.fail(u, f, is.line, is.service, "", "", is.err)
		}
		if pf.cf == nil {
			continue
		}
		for _, s := range pf.cf.services {
			a := svcs[s.name]
			if a == nil {
				a = &svc{file: f, line: s.line}
				svcs[s.name] = a
				order = append(order, s.name)
			}
			if s.extendsFile > 0 {
				l.fail(u, f, s.extendsFile, s.name, "", "", errors.New("extends.file is not supported: the image it brings could not be pinned; move the service into the app's Compose files"))
			}
			a.extends = a.extends || s.extends > 0
			if s.build > 0 && a.buildLine == 0 {
				a.build, a.buildLine = f, s.build
			}
			if s.image != nil {
				a.image = true
				l.imageSite(u, f, pf, s)
			}
		}
	}
	for _, name := range order {
		a := svcs[name]
		switch {
		case a.image || a.extends:
		case a.buildLine > 0:
			l.fail(u, a.build, a.buildLine, name, "", "", errors.New("build: without image: devices do not build images; build and push the image in CI and set image: to it"))
		default:
			l.fail(u, a.file, a.line, name, "", "", errors.New("no image: set image: to the reference of the image to run"))
		}
	}
}

// compose reads and parses a Compose file once.
func (l *locker) compose(p string) *parsedFile {
	if pf, ok := l.files[p]; ok {
		return pf
	}
	pf := &parsedFile{values: map[*yaml.Node]string{}}
	l.files[p] = pf
	data, err := readFile(l.fsys, p, maxComposeSize)
	if err != nil {
		pf.err = err
		return pf
	}
	pf.cf, pf.issues = parseCompose(data)
	return pf
}

// imageSite records the image of service s, in file f.
func (l *locker) imageSite(u unit, f string, pf *parsedFile, s *service) {
	v := s.image.Value
	ref, err := parseImage(v)
	if err != nil {
		l.fail(u, f, s.imageLine, s.name, KindImage, v, err)
		return
	}
	e := Entry{App: u.app.Name, Extension: u.ext, File: f, Service: s.name, Kind: KindImage, Ref: v, Repository: ref.repository}
	if ref.digest != "" {
		e.Digest = ref.digest
		l.entries = append(l.entries, e)
		return
	}
	l.sites = append(l.sites, &site{u: u, entry: e, resolve: ref.resolvable(), line: s.imageLine, file: pf, node: s.image, written: withTag(v, ref)})
}

func (l *locker) scanHelm(u unit) {
	h := u.app.Helm
	_, hn := get(u.node, "helm")
	if h.Chart != "" {
		repo := strings.TrimPrefix(h.Chart, "oci://")
		_, vn := get(hn, "version")
		l.sites = append(l.sites, &site{
			u:       u,
			entry:   Entry{App: u.app.Name, Extension: u.ext, File: state.FileName, Kind: KindChart, Ref: h.Chart + ":" + h.Version, Repository: repo},
			resolve: repo + ":" + strings.ReplaceAll(h.Version, "+", "_"),
			line:    lineOf(hn, "chart"),
			helm:    hn,
			version: vn,
		})
	}
	if h.Path != "" {
		if err := state.RegularFile(l.fsys, path.Join(h.Path, "Chart.yaml")); err != nil {
			l.fail(u, state.FileName, lineOf(hn, "path"), "", "", "", fmt.Errorf("chart folder %q has no Chart.yaml: %w", h.Path, err))
		}
	}
	_, vfs := get(hn, "valuesFiles")
	for i, vf := range h.ValuesFiles {
		line := lineOf(hn, "valuesFiles")
		if vfs != nil && i < len(vfs.Content) {
			line = vfs.Content[i].Line
		}
		if err := checkValues(l.fsys, vf); err != nil {
			l.fail(u, state.FileName, line, "", "", "", err)
		}
	}
}

// checkValues checks that a values file exists and is a YAML mapping.
func checkValues(fsys fs.FS, p string) error {
	if err := state.RegularFile(fsys, p); err != nil {
		return fmt.Errorf("values file %w", err)
	}
	data, err := readFile(fsys, p, maxComposeSize)
	if err != nil {
		return fmt.Errorf("values file: %w", err)
	}
	doc, err := decodeYAML(data)
	if err != nil {
		if line := yamlErrLine(err); line > 0 {
			return fmt.Errorf("values file %q, line %d: %w", p, line, err)
		}
		return fmt.Errorf("values file %q: %w", p, err)
	}
	if doc != nil {
		if n := deref(doc.Content[0]); n != nil && !isNull(n) && n.Kind != yaml.MappingNode {
			return fmt.Errorf("values file %q: must be a mapping", p)
		}
	}
	return nil
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

// result builds the overlay. st has the digests written in berth.yaml.
func (l *locker) result(data []byte, doc *yaml.Node, st *state.DeviceState) (*Result, error) {
	res := &Result{Overlay: map[string][]byte{}}
	var paths []string
	for p, pf := range l.files {
		if len(pf.values) > 0 {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		out, err := rewriteCompose(l.files[p])
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		res.Overlay[p] = out
	}
	if len(l.inserts) > 0 {
		out, err := rewriteState(data, doc, l.inserts, st)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", state.FileName, err)
		}
		res.Overlay[state.FileName] = out
	}
	sort.SliceStable(l.entries, func(i, j int) bool {
		a, b := l.entries[i], l.entries[j]
		for _, c := range [][2]string{{a.App, b.App}, {a.File, b.File}, {a.Service, b.Service}, {a.Kind, b.Kind}, {a.Ref, b.Ref}} {
			if c[0] != c[1] {
				return c[0] < c[1]
			}
		}
		return false
	})
	res.Lock = l.entries
	if res.Lock == nil {
		res.Lock = []Entry{}
	}
	lf, err := encodeLock(res.Lock)
	if err != nil {
		return nil, err
	}
	res.Overlay[LockFile] = lf
	return res, nil
}

// encodeLock encodes the lock file.
func encodeLock(entries []Entry) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	err := enc.Encode(struct {
		APIVersion string  `json:"apiVersion"`
		Kind       string  `json:"kind"`
		Entries    []Entry `json:"entries"`
	}{state.APIVersion, "Lock", entries})
	if err != nil {
		return nil, fmt.Errorf("lock: encode %s: %w", LockFile, err)
	}
	return buf.Bytes(), nil
}

// rewriteCompose returns the Compose file with its images pinned, edited
// in place if it can be, encoded again otherwise.
func rewriteCompose(pf *parsedFile) ([]byte, error) {
	if out, ok := replaceScalars(pf.cf.data, pf.values); ok && composeMatches(out, pf) {
		return out, nil
	}
	for n, v := range pf.values {
		n.Value = v
		n.Style &^= yaml.LiteralStyle | yaml.FoldedStyle
	}
	out, err := encodeYAML(pf.cf.doc)
	if err != nil {
		return nil, err
	}
	if !composeMatches(out, pf) {
		return nil, errors.New("cannot rewrite the images of this file: simplify its YAML")
	}
	return out, nil
}

// composeMatches checks that out, a rewritten Compose file, has the
// services of pf with the images pinned.
func composeMatches(out []byte, pf *parsedFile) bool {
	cf, issues := parseCompose(out)
	if cf == nil || len(issues) > 0 || len(cf.services) != len(pf.cf.services) {
		return false
	}
	for i, s := range pf.cf.services {
		t := cf.services[i]
		if s.name != t.name || (s.image == nil) != (t.image == nil) {
			return false
		}
		if s.image == nil {
			continue
		}
		want, ok := pf.values[s.image]
		if !ok {
			want = s.image.Value
		}
		if t.image.Value != want {
			return false
		}
	}
	return true
}

// rewriteState returns berth.yaml with the digests written after the
// versions, edited in place if it can be, encoded again otherwise. st is
// what the result must parse to.
func rewriteState(data []byte, doc *yaml.Node, inserts []insert, st *state.DeviceState) ([]byte, error) {
	starts := lineStarts(data)
	var edits []edit
	for _, ins := range inserts {
		e, ok := insertAfter(data, starts, ins.helm, ins.version, "digest", ins.digest)
		if !ok {
			edits = nil
			break
		}
		edits = append(edits, e)
	}
	if edits != nil {
		if out, ok := applyEdits(data, edits); ok && stateMatches(out, st) {
			return out, nil
		}
	}
	for _, ins := range inserts {
		for i := 1; i < len(ins.helm.Content); i += 2 {
			if ins.helm.Content[i] == ins.version {
				k := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "digest"}
				v := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: ins.digest}
				ins.helm.Content = append(ins.helm.Content[:i+1], append([]*yaml.Node{k, v}, ins.helm.Content[i+1:]...)...)
				break
			}
		}
	}
	out, err := encodeYAML(doc)
	if err != nil {
		return nil, err
	}
	if !stateMatches(out, st) {
		return nil, errors.New("cannot write the chart digests: simplify its YAML")
	}
	return out, nil
}

// stateMatches checks that out parses to st.
func stateMatches(out []byte, st *state.DeviceState) bool {
	got, err := state.Parse(state.FileName, out)
	if err != nil || len(got.Apps) != len(st.Apps) || len(got.Extensions) != len(st.Extensions) {
		return false
	}
	want := append(append([]state.App(nil), st.Apps...), st.Extensions...)
	for i, a := range append(got.Apps, got.Extensions...) {
		b := want[i]
		if a.Helm != nil && b.Helm != nil {
			// Values may hold NaN, which reflect.DeepEqual never finds
			// equal: compare them apart.
			if !sameValue(a.Helm.Values, b.Helm.Values) {
				return false
			}
			ah, bh := *a.Helm, *b.Helm
			ah.Values, bh.Values = nil, nil
			a.Helm, b.Helm = &ah, &bh
		}
		if !reflect.DeepEqual(a, b) {
			return false
		}
	}
	return got.APIVersion == st.APIVersion && got.Kind == st.Kind
}

// sameValue is reflect.DeepEqual for decoded YAML values, NaN equal to NaN.
func sameValue(a, b any) bool {
	switch a := a.(type) {
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) || (a == nil) != (b == nil) {
			return false
		}
		for k, v := range a {
			w, ok := b[k]
			if !ok || !sameValue(v, w) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !sameValue(a[i], b[i]) {
				return false
			}
		}
		return true
	case float64:
		b, ok := b.(float64)
		return ok && (a == b || (math.IsNaN(a) && math.IsNaN(b)))
	}
	return reflect.DeepEqual(a, b)
}

// readFile reads the regular file p of fsys, up to max bytes.
func readFile(fsys fs.FS, p string, max int64) ([]byte, error) {
	f, err := fsys.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%q is not a regular file", p)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %q: %w", p, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%q is larger than %d bytes", p, max)
	}
	return data, nil
}
