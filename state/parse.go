package state

import (
	"fmt"
	"io/fs"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/internal/yamlstrict"
)

// Parse parses and validates a berth.yaml. name is the file name used in
// errors. All the problems found are returned at once, joined, each an
// *Error.
func Parse(name string, data []byte) (*DeviceState, error) {
	p := &parser{Parser: yamlstrict.Parser{File: name, Elsewhere: elsewhere}}
	root := p.Document(data, fmt.Sprintf("a desired state needs apiVersion: %s, kind: %s and apps", APIVersion, Kind), FileName)
	if root == nil {
		return nil, p.Err()
	}
	st := p.state(root)
	if p.Failed() {
		return nil, p.Err()
	}
	return st, nil
}

// parser walks the nodes of a berth.yaml with the shared strict helpers.
// elsewhere says where the fields of berth.yaml belong, for a field found
// in the wrong mapping (yamlstrict.Parser.Elsewhere).
var elsewhere = func() map[string]string {
	m := map[string]string{
		"files":      "did you mean compose.files?",
		"prune":      "did you mean compose.prune?",
		"apps":       "apps is a top-level key",
		"extensions": "extensions is a top-level key",
	}
	for _, k := range []string{"chart", "version", "digest", "namespace", "releaseName", "values", "valuesFiles", "wait", "maxHistory"} {
		m[k] = "did you mean helm." + k + "?"
	}
	return m
}()

type parser struct {
	yamlstrict.Parser
}

func (p *parser) state(root *yaml.Node) *DeviceState {
	st := &DeviceState{}
	f := p.Mapping(root, "", "apiVersion", "kind", "apps", "extensions", "rollout")
	if f == nil {
		return st
	}
	st.APIVersion = p.exact(root, f, "apiVersion", APIVersion)
	st.Kind = p.exact(root, f, "kind", Kind)

	names := map[string]int{} // app and extension names, to their line
	if a, ok := f["apps"]; ok && !yamlstrict.IsNull(a.Val) && p.Kind(a.Val, "apps", yaml.SequenceNode) {
		for i, n := range a.Val.Content {
			path := fmt.Sprintf("apps[%d]", i)
			app := p.app(n, path, "")
			if app == nil {
				continue
			}
			if app.Name != "" {
				if first, dup := names[app.Name]; dup {
					p.Errorf(n, yamlstrict.Join(path, "name"), "duplicate app name %q (first at line %d)", app.Name, first)
				} else {
					names[app.Name] = n.Line
				}
			}
			st.Apps = append(st.Apps, *app)
		}
	}
	if e, ok := f["extensions"]; ok && !yamlstrict.IsNull(e.Val) && p.Kind(e.Val, "extensions", yaml.MappingNode) {
		p.Keys(e.Val, "extensions", func(k, v *yaml.Node) {
			path := "extensions." + k.Value
			if !labelRE.MatchString(k.Value) {
				path = fmt.Sprintf("extensions[%q]", k.Value)
			}
			valid := p.name(k, path, k.Value)
			if first, dup := names[k.Value]; dup && valid {
				p.Errorf(k, path, "name %q is already used by an app (line %d): names are unique among apps and extensions", k.Value, first)
			}
			if app := p.app(v, path, k.Value); app != nil && valid {
				st.Extensions = append(st.Extensions, *app)
			}
		})
	}
	if r, ok := f["rollout"]; ok {
		st.Rollout = p.rollout(r.Val)
	}
	return st
}

// exact checks that field name of the root is want.
func (p *parser) exact(root *yaml.Node, f map[string]yamlstrict.Field, name, want string) string {
	fv, ok := f[name]
	if !ok {
		p.Missing(root, root, "", name, fmt.Sprintf(" (%s: %s)", name, want))
		return ""
	}
	s, ok := p.Str(fv.Val, name)
	if ok && s != want {
		p.Errorf(fv.Val, name, "must be %q, got %q", want, s)
	}
	return s
}

var labelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// name checks an app or extension name.
func (p *parser) name(n *yaml.Node, path, s string) bool {
	if len(s) > 53 || !labelRE.MatchString(s) {
		p.Errorf(n, path, "invalid name %q: use at most 53 lowercase letters, digits and '-', starting and ending with a letter or digit", s)
		return false
	}
	return true
}

// app parses an app; extName is the name of an extension, empty for an app.
func (p *parser) app(n *yaml.Node, path, extName string) *App {
	known := []string{"name", "compose", "helm", "prune"}
	if extName != "" {
		known = known[1:]
	}
	f := p.Mapping(n, path, known...)
	if f == nil {
		return nil
	}
	app := &App{Name: extName}
	if extName == "" {
		if nf, ok := f["name"]; !ok {
			p.Missing(n, n, path, "name", "")
		} else if s, ok := p.Str(nf.Val, yamlstrict.Join(path, "name")); ok && p.name(nf.Val, yamlstrict.Join(path, "name"), s) {
			app.Name = s
		}
	}
	c, hasC := f["compose"]
	h, hasH := f["helm"]
	switch {
	case hasC && hasH:
		p.Errorf(h.Key, path, "has both compose and helm: an app is deployed with one of them, split it into two apps")
	case !hasC && !hasH:
		p.Errorf(n, path, "needs compose or helm")
	case hasC:
		app.Compose = p.compose(c.Val, yamlstrict.Join(path, "compose"), c.Key)
	default:
		app.Helm = p.helm(h.Val, yamlstrict.Join(path, "helm"), app.Name, h.Key)
	}
	if pr, ok := f["prune"]; ok && !yamlstrict.IsNull(pr.Val) {
		if hasH && !hasC {
			p.Errorf(pr.Key, path, "prune only applies to compose apps")
		}
		pf := p.Mapping(pr.Val, yamlstrict.Join(path, "prune"), "volumes")
		if v, ok := pf["volumes"]; ok {
			app.Prune.Volumes, _ = p.Bool(v.Val, yamlstrict.Join(path, "prune.volumes"))
		}
	}
	return app
}

// compose parses a Compose app; at is its key, where missing fields are
// reported.
func (p *parser) compose(n *yaml.Node, path string, at *yaml.Node) *Compose {
	f := p.Mapping(n, path, "path", "files")
	if f == nil {
		return nil
	}
	c := &Compose{}
	if pf, ok := f["path"]; !ok {
		p.Missing(n, at, path, "path", " (the folder of the Compose project)")
	} else if s, ok := p.Str(pf.Val, yamlstrict.Join(path, "path")); ok {
		p.relPath(pf.Val, yamlstrict.Join(path, "path"), s, true)
		c.Path = s
	}
	if ff, ok := f["files"]; ok {
		c.Files = p.Strings(ff.Val, yamlstrict.Join(path, "files"), func(n *yaml.Node, path, s string) {
			p.relPath(n, path, s, false)
		})
	}
	return c
}

var (
	// chartRE matches an OCI repository with an explicit registry host,
	// as Helm needs it after oci://.
	chartRE = regexp.MustCompile(`^` +
		`(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?` +
		`(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)+$`)
	// tagRE matches an OCI tag.
	tagRE = regexp.MustCompile(`^[\w][\w.-]{0,127}$`)
	// digestRE matches a sha256 digest.
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	// releaseRE matches a Helm release name.
	releaseRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// helm parses a Helm app; at is its key, where missing fields are reported.
func (p *parser) helm(n *yaml.Node, path, app string, at *yaml.Node) *Helm {
	f := p.Mapping(n, path, "chart", "version", "digest", "path", "namespace", "releaseName", "values", "valuesFiles", "wait", "timeout", "maxHistory")
	if f == nil {
		return nil
	}
	h := &Helm{ReleaseName: app, Wait: true, Timeout: DefaultTimeout, MaxHistory: DefaultMaxHistory}
	str := func(name string) (*yaml.Node, string, bool) {
		fv, ok := f[name]
		if !ok {
			return nil, "", false
		}
		s, ok := p.Str(fv.Val, yamlstrict.Join(path, name))
		return fv.Val, s, ok
	}
	chartN, chart, hasChart := str("chart")
	pathN, chartPath, hasPath := str("path")
	_, chartSet := f["chart"]
	_, pathSet := f["path"]
	switch {
	case chartSet && pathSet:
		p.Errorf(f["path"].Key, path, "has both chart and path: use chart for an oci:// chart, path for a chart in the repository")
	case !chartSet && !pathSet && !p.Typo(n, "chart") && !p.Typo(n, "path"):
		p.Errorf(at, path, "needs chart (an oci:// URL) or path (a chart folder in the repository)")
	}
	if hasChart {
		h.Chart = chart
		p.chartURL(chartN, yamlstrict.Join(path, "chart"), chart)
	}
	if hasPath {
		h.Path = chartPath
		p.relPath(pathN, yamlstrict.Join(path, "path"), chartPath, false)
	}
	if vn, v, ok := str("version"); ok {
		h.Version = v
		switch {
		case pathSet && !chartSet:
			p.Errorf(vn, yamlstrict.Join(path, "version"), "only applies to chart: the version of a path chart is in its Chart.yaml")
		case !tagRE.MatchString(strings.ReplaceAll(v, "+", "_")):
			p.Errorf(vn, yamlstrict.Join(path, "version"), "must be an exact chart version such as 2.3.1, got %q", v)
		}
	} else if _, set := f["version"]; !set && chartSet {
		p.Missing(n, f["chart"].Key, path, "version", ": a chart: needs the exact version to deploy")
	}
	if dn, d, ok := str("digest"); ok {
		h.Digest = d
		switch {
		case pathSet && !chartSet:
			p.Errorf(dn, yamlstrict.Join(path, "digest"), "only applies to chart:")
		case !digestRE.MatchString(d):
			p.Errorf(dn, yamlstrict.Join(path, "digest"), "must be sha256: followed by 64 lowercase hex digits, got %q (remove it to have it written by the lock step)", d)
		}
	}
	if nn, ns, ok := str("namespace"); ok {
		h.Namespace = ns
		if len(ns) > 63 || !labelRE.MatchString(ns) {
			p.Errorf(nn, yamlstrict.Join(path, "namespace"), "invalid namespace %q: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit", ns)
		}
	}
	if rn, r, ok := str("releaseName"); ok {
		h.ReleaseName = r
		if len(r) > 53 || !releaseRE.MatchString(r) {
			p.Errorf(rn, yamlstrict.Join(path, "releaseName"), "invalid release name %q: use at most 53 lowercase letters, digits, '-' and '.'", r)
		}
	}
	if vf, ok := f["values"]; ok {
		h.Values = p.values(vf.Val, yamlstrict.Join(path, "values"))
	}
	if vf, ok := f["valuesFiles"]; ok {
		h.ValuesFiles = p.Strings(vf.Val, yamlstrict.Join(path, "valuesFiles"), func(n *yaml.Node, path, s string) {
			p.relPath(n, path, s, false)
		})
	}
	if w, ok := f["wait"]; ok {
		if b, ok := p.Bool(w.Val, yamlstrict.Join(path, "wait")); ok {
			h.Wait = b
		}
	}
	if tn, t, ok := str("timeout"); ok {
		d, err := time.ParseDuration(t)
		switch {
		case err != nil:
			p.Errorf(tn, yamlstrict.Join(path, "timeout"), "must be a duration such as 5m or 90s, got %q", t)
		case d <= 0:
			p.Errorf(tn, yamlstrict.Join(path, "timeout"), "must be positive, got %q", t)
		default:
			h.Timeout = d
		}
	}
	if m, ok := f["maxHistory"]; ok {
		if v, ok := p.Int(m.Val, yamlstrict.Join(path, "maxHistory")); ok {
			if v < 1 || v > MaxMaxHistory {
				p.Errorf(m.Val, yamlstrict.Join(path, "maxHistory"), "must be between 1 and %d, got %d", MaxMaxHistory, v)
			} else {
				h.MaxHistory = int(v)
			}
		}
	}
	return h
}

// chartURL checks an oci:// chart URL.
func (p *parser) chartURL(n *yaml.Node, path, s string) {
	rest, ok := strings.CutPrefix(s, "oci://")
	if !ok {
		p.Errorf(n, path, "must be an oci:// URL such as oci://ghcr.io/acme/charts/metrics (use path: for a chart folder in the repository), got %q", s)
		return
	}
	if i := strings.LastIndex(rest, "/"); strings.Contains(rest, "@") || (i >= 0 && strings.Contains(rest[i+1:], ":")) {
		p.Errorf(n, path, "%q must not carry a tag or digest: set version: (and let the lock step write digest:)", s)
		return
	}
	if len(rest) > 255 || !chartRE.MatchString(rest) {
		p.Errorf(n, path, "%q is not a valid OCI repository URL: it needs oci://, a registry host and a lowercase repository path, such as oci://ghcr.io/acme/charts/metrics", s)
	}
}

// relPath checks a path relative to the root of the repository; dot
// allows "." itself.
func (p *parser) relPath(n *yaml.Node, path, s string, dot bool) {
	if s == "." && dot {
		return
	}
	if s == "" || s == "." || strings.ContainsAny(s, "\\\x00") || !fs.ValidPath(s) {
		p.Errorf(n, path, "%q must be a clean relative path inside the repository, with '/' separators and no '..', '.' or leading '/'", s)
	}
}

// values decodes inline Helm values; aliases are allowed in them.
func (p *parser) values(n *yaml.Node, path string) map[string]any {
	for i := 0; i < 100 && n.Kind == yaml.AliasNode && n.Alias != nil; i++ {
		n = n.Alias
	}
	if yamlstrict.IsNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.Errorf(n, path, "must be a mapping, got %s", yamlstrict.Describe(n))
		return nil
	}
	bad := false
	seen := map[*yaml.Node]bool{}
	var walk func(n *yaml.Node, path string, depth int)
	walk = func(n *yaml.Node, path string, depth int) {
		if n == nil || seen[n] || depth > 100 {
			return
		}
		seen[n] = true
		switch n.Kind {
		case yaml.AliasNode:
			walk(n.Alias, path, depth+1)
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i), depth+1)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
					walk(v, path, depth+1)
					continue
				}
				if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
					p.Errorf(k, path, "keys must be strings, got %s (quote it)", yamlstrict.Describe(k))
					bad = true
					continue
				}
				walk(v, yamlstrict.Join(path, k.Value), depth+1)
			}
		}
	}
	walk(n, path, 0)
	if bad {
		return nil
	}
	var m map[string]any
	if !p.Decode(n, path, &m) {
		return nil
	}
	return m
}
