package devicestate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Parse parses and validates a berth.yaml. name is the file name used in
// errors. All the problems found are returned at once, joined, each an
// *Error.
func Parse(name string, data []byte) (*DeviceState, error) {
	p := &parser{file: name}
	root := p.document(data)
	if root == nil {
		return nil, p.err()
	}
	st := p.state(root)
	if len(p.errs) > 0 {
		return nil, p.err()
	}
	return st, nil
}

type parser struct {
	file string
	errs []*Error
	// typos are, per mapping, the known fields that an unknown field
	// looks like a typo of: they are not reported missing as well.
	typos map[*yaml.Node]map[string]bool
}

// missing reports that the mapping n lacks field name, unless an unknown
// field of n was already reported as a likely typo of it.
func (p *parser) missing(n, at *yaml.Node, path, name, why string) {
	if p.typos[n][name] {
		return
	}
	p.errorf(at, path, "missing required field %q%s", name, why)
}

func (p *parser) errorf(n *yaml.Node, field, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// err joins the errors found, ordered by line.
func (p *parser) err() error {
	sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
	errs := make([]error, len(p.errs))
	for i, e := range p.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// document decodes data into a single YAML document and returns its root,
// or nil after recording why it cannot.
func (p *parser) document(data []byte) (root *yaml.Node) {
	defer func() {
		// yaml.v3 reports its errors by panicking internally and recovers
		// them itself; anything else it lets through is a bug of its own
		// that must not take the caller down.
		if r := recover(); r != nil {
			p.errorf(nil, "", "invalid YAML: %v", r)
			root = nil
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errorf(nil, "", "empty file: a desired state needs apiVersion: %s, kind: %s and apps", APIVersion, Kind)
		} else {
			p.yamlError(data, err)
		}
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.errorf(&extra, "", "a second YAML document: berth.yaml holds exactly one")
		return nil
	} else if !errors.Is(err, io.EOF) {
		p.yamlError(data, err)
		return nil
	}
	if len(doc.Content) == 0 || doc.Content[0].ShortTag() == "!!null" {
		p.errorf(&doc, "", "empty document: a desired state needs apiVersion: %s, kind: %s and apps", APIVersion, Kind)
		return nil
	}
	return doc.Content[0]
}

var (
	yamlLine      = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	unknownAnchor = regexp.MustCompile(`^yaml: unknown anchor '(.*)' referenced$`)
)

// yamlError records an error of yaml.v3, located at its line when it has one.
func (p *parser) yamlError(data []byte, err error) {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	for _, m := range msgs {
		line := 0
		if sm := yamlLine.FindStringSubmatch(m); sm != nil {
			line, _ = strconv.Atoi(sm[1])
			m = sm[2]
		}
		if sm := unknownAnchor.FindStringSubmatch(m); sm != nil && line == 0 {
			if i := bytes.Index(data, []byte("*"+sm[1])); i >= 0 {
				line = 1 + bytes.Count(data[:i], []byte("\n"))
			}
		}
		m = strings.TrimPrefix(m, "yaml: ")
		p.errs = append(p.errs, &Error{File: p.file, Line: line, Msg: "invalid YAML: " + m})
	}
}

// field is a key and its value in a mapping.
type field struct{ key, val *yaml.Node }

// join returns the path of field f of the node at path.
func join(path, f string) string {
	if path == "" {
		return f
	}
	return path + "." + f
}

// mapping checks that n is a mapping whose keys are among known, and
// returns its fields by key. It returns nil when n is not a mapping.
func (p *parser) mapping(n *yaml.Node, path string, known ...string) map[string]field {
	if !p.kind(n, path, yaml.MappingNode) {
		return nil
	}
	out := map[string]field{}
	p.keys(n, path, func(k, v *yaml.Node) {
		if !contains(known, k.Value) {
			msg := fmt.Sprintf("unknown field %q", k.Value)
			if s := suggest(k.Value, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
				if p.typos == nil {
					p.typos = map[*yaml.Node]map[string]bool{}
				}
				if p.typos[n] == nil {
					p.typos[n] = map[string]bool{}
				}
				p.typos[n][s] = true
			}
			p.errorf(k, path, "%s", msg)
			return
		}
		out[k.Value] = field{k, v}
	})
	return out
}

// keys calls fn for each key and value of the mapping n whose key is a
// plain string, appearing for the first time, and not a merge key.
func (p *parser) keys(n *yaml.Node, path string, fn func(k, v *yaml.Node)) {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge":
			p.errorf(k, path, "merge keys (<<) are not supported here: write the fields out")
			continue
		case k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str":
			p.errorf(k, path, "keys must be strings, got %s", describe(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p.errorf(k, path, "duplicate field %q (first at line %d)", k.Value, first)
			continue
		}
		seen[k.Value] = k.Line
		fn(k, v)
	}
}

// kind checks that n is of kind k, records an error if not.
func (p *parser) kind(n *yaml.Node, path string, k yaml.Kind) bool {
	if n.Kind == yaml.AliasNode {
		p.errorf(n, path, "YAML aliases are not supported here: write the value out")
		return false
	}
	if n.Kind != k {
		p.errorf(n, path, "must be %s, got %s", kindName(k), describe(n))
		return false
	}
	return true
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return "a scalar"
	}
}

// describe names what n is, for errors.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	switch n.ShortTag() {
	case "!!null":
		return "null"
	case "!!bool":
		return fmt.Sprintf("the boolean %s", n.Value)
	case "!!int", "!!float":
		return fmt.Sprintf("the number %s", n.Value)
	case "!!str":
		return fmt.Sprintf("the string %q", n.Value)
	}
	return fmt.Sprintf("a value tagged %s", n.ShortTag())
}

// str returns the text of the scalar n. Numbers and dates are taken as
// written.
func (p *parser) str(n *yaml.Node, path string) (string, bool) {
	if n.Kind == yaml.AliasNode {
		p.kind(n, path, yaml.ScalarNode)
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		p.errorf(n, path, "must be a string, got %s", describe(n))
		return "", false
	}
	switch n.ShortTag() {
	case "!!str", "!!int", "!!float", "!!timestamp":
		return n.Value, true
	case "!!bool", "!!null":
		p.errorf(n, path, "must be a string, got %s (quote it if you mean the string)", describe(n))
	default:
		p.errorf(n, path, "must be a string, got %s", describe(n))
	}
	return "", false
}

// boolean returns the value of the boolean scalar n.
func (p *parser) boolean(n *yaml.Node, path string) (bool, bool) {
	if !p.kind(n, path, yaml.ScalarNode) {
		return false, false
	}
	if n.ShortTag() != "!!bool" {
		p.errorf(n, path, "must be true or false, got %s", describe(n))
		return false, false
	}
	var b bool
	if err := n.Decode(&b); err != nil {
		p.errorf(n, path, "must be true or false, got %s", describe(n))
		return false, false
	}
	return b, true
}

// isNull reports whether n is an explicit or empty null.
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// strings returns the strings of the list n; null is an empty list.
func (p *parser) strings(n *yaml.Node, path string, check func(n *yaml.Node, path, s string)) []string {
	if isNull(n) || !p.kind(n, path, yaml.SequenceNode) {
		return nil
	}
	var out []string
	seen := map[string]int{}
	for i, item := range n.Content {
		ip := fmt.Sprintf("%s[%d]", path, i)
		s, ok := p.str(item, ip)
		if !ok {
			continue
		}
		if first, dup := seen[s]; dup {
			p.errorf(item, ip, "%q is listed twice (first at line %d)", s, first)
			continue
		}
		seen[s] = item.Line
		check(item, ip, s)
		out = append(out, s)
	}
	return out
}

func (p *parser) state(root *yaml.Node) *DeviceState {
	st := &DeviceState{}
	f := p.mapping(root, "", "apiVersion", "kind", "apps", "extensions")
	if f == nil {
		return st
	}
	st.APIVersion = p.exact(root, f, "apiVersion", APIVersion)
	st.Kind = p.exact(root, f, "kind", Kind)

	names := map[string]int{} // app and extension names, to their line
	if a, ok := f["apps"]; ok && !isNull(a.val) && p.kind(a.val, "apps", yaml.SequenceNode) {
		for i, n := range a.val.Content {
			path := fmt.Sprintf("apps[%d]", i)
			app := p.app(n, path, "")
			if app == nil {
				continue
			}
			if app.Name != "" {
				if first, dup := names[app.Name]; dup {
					p.errorf(n, join(path, "name"), "duplicate app name %q (first at line %d)", app.Name, first)
				} else {
					names[app.Name] = n.Line
				}
			}
			st.Apps = append(st.Apps, *app)
		}
	}
	if e, ok := f["extensions"]; ok && !isNull(e.val) && p.kind(e.val, "extensions", yaml.MappingNode) {
		p.keys(e.val, "extensions", func(k, v *yaml.Node) {
			path := "extensions." + k.Value
			if !labelRE.MatchString(k.Value) {
				path = fmt.Sprintf("extensions[%q]", k.Value)
			}
			valid := p.name(k, path, k.Value)
			if first, dup := names[k.Value]; dup && valid {
				p.errorf(k, path, "name %q is already used by an app (line %d): names are unique among apps and extensions", k.Value, first)
			}
			if app := p.app(v, path, k.Value); app != nil && valid {
				st.Extensions = append(st.Extensions, *app)
			}
		})
	}
	return st
}

// exact checks that field name of the root is want.
func (p *parser) exact(root *yaml.Node, f map[string]field, name, want string) string {
	fv, ok := f[name]
	if !ok {
		p.missing(root, root, "", name, fmt.Sprintf(" (%s: %s)", name, want))
		return ""
	}
	s, ok := p.str(fv.val, name)
	if ok && s != want {
		p.errorf(fv.val, name, "must be %q, got %q", want, s)
	}
	return s
}

var labelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// name checks an app or extension name.
func (p *parser) name(n *yaml.Node, path, s string) bool {
	if len(s) > 53 || !labelRE.MatchString(s) {
		p.errorf(n, path, "invalid name %q: use at most 53 lowercase letters, digits and '-', starting and ending with a letter or digit", s)
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
	f := p.mapping(n, path, known...)
	if f == nil {
		return nil
	}
	app := &App{Name: extName}
	if extName == "" {
		if nf, ok := f["name"]; !ok {
			p.missing(n, n, path, "name", "")
		} else if s, ok := p.str(nf.val, join(path, "name")); ok && p.name(nf.val, join(path, "name"), s) {
			app.Name = s
		}
	}
	c, hasC := f["compose"]
	h, hasH := f["helm"]
	switch {
	case hasC && hasH:
		p.errorf(h.key, path, "has both compose and helm: an app is deployed with one of them, split it into two apps")
	case !hasC && !hasH:
		p.errorf(n, path, "needs compose or helm")
	case hasC:
		app.Compose = p.compose(c.val, join(path, "compose"), c.key)
	default:
		app.Helm = p.helm(h.val, join(path, "helm"), app.Name, h.key)
	}
	if pr, ok := f["prune"]; ok && !isNull(pr.val) {
		if hasH && !hasC {
			p.errorf(pr.key, path, "prune only applies to compose apps")
		}
		pf := p.mapping(pr.val, join(path, "prune"), "volumes")
		if v, ok := pf["volumes"]; ok {
			app.Prune.Volumes, _ = p.boolean(v.val, join(path, "prune.volumes"))
		}
	}
	return app
}

// compose parses a Compose app; at is its key, where missing fields are
// reported.
func (p *parser) compose(n *yaml.Node, path string, at *yaml.Node) *Compose {
	f := p.mapping(n, path, "path", "files")
	if f == nil {
		return nil
	}
	c := &Compose{}
	if pf, ok := f["path"]; !ok {
		p.missing(n, at, path, "path", " (the folder of the Compose project)")
	} else if s, ok := p.str(pf.val, join(path, "path")); ok {
		p.relPath(pf.val, join(path, "path"), s, true)
		c.Path = s
	}
	if ff, ok := f["files"]; ok {
		c.Files = p.strings(ff.val, join(path, "files"), func(n *yaml.Node, path, s string) {
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
	f := p.mapping(n, path, "chart", "version", "digest", "path", "namespace", "releaseName", "values", "valuesFiles", "wait", "timeout")
	if f == nil {
		return nil
	}
	h := &Helm{ReleaseName: app, Wait: true, Timeout: DefaultTimeout}
	str := func(name string) (*yaml.Node, string, bool) {
		fv, ok := f[name]
		if !ok {
			return nil, "", false
		}
		s, ok := p.str(fv.val, join(path, name))
		return fv.val, s, ok
	}
	chartN, chart, hasChart := str("chart")
	pathN, chartPath, hasPath := str("path")
	_, chartSet := f["chart"]
	_, pathSet := f["path"]
	switch {
	case chartSet && pathSet:
		p.errorf(f["path"].key, path, "has both chart and path: use chart for an oci:// chart, path for a chart in the repository")
	case !chartSet && !pathSet && !p.typos[n]["chart"] && !p.typos[n]["path"]:
		p.errorf(at, path, "needs chart (an oci:// URL) or path (a chart folder in the repository)")
	}
	if hasChart {
		h.Chart = chart
		p.chartURL(chartN, join(path, "chart"), chart)
	}
	if hasPath {
		h.Path = chartPath
		p.relPath(pathN, join(path, "path"), chartPath, false)
	}
	if vn, v, ok := str("version"); ok {
		h.Version = v
		switch {
		case pathSet && !chartSet:
			p.errorf(vn, join(path, "version"), "only applies to chart: the version of a path chart is in its Chart.yaml")
		case !tagRE.MatchString(strings.ReplaceAll(v, "+", "_")):
			p.errorf(vn, join(path, "version"), "must be an exact chart version such as 2.3.1, got %q", v)
		}
	} else if _, set := f["version"]; !set && chartSet {
		p.missing(n, f["chart"].key, path, "version", ": a chart: needs the exact version to deploy")
	}
	if dn, d, ok := str("digest"); ok {
		h.Digest = d
		switch {
		case pathSet && !chartSet:
			p.errorf(dn, join(path, "digest"), "only applies to chart:")
		case !digestRE.MatchString(d):
			p.errorf(dn, join(path, "digest"), "must be sha256: followed by 64 lowercase hex digits, got %q (remove it to have it written by the lock step)", d)
		}
	}
	if nn, ns, ok := str("namespace"); ok {
		h.Namespace = ns
		if len(ns) > 63 || !labelRE.MatchString(ns) {
			p.errorf(nn, join(path, "namespace"), "invalid namespace %q: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit", ns)
		}
	}
	if rn, r, ok := str("releaseName"); ok {
		h.ReleaseName = r
		if len(r) > 53 || !releaseRE.MatchString(r) {
			p.errorf(rn, join(path, "releaseName"), "invalid release name %q: use at most 53 lowercase letters, digits, '-' and '.'", r)
		}
	}
	if vf, ok := f["values"]; ok {
		h.Values = p.values(vf.val, join(path, "values"))
	}
	if vf, ok := f["valuesFiles"]; ok {
		h.ValuesFiles = p.strings(vf.val, join(path, "valuesFiles"), func(n *yaml.Node, path, s string) {
			p.relPath(n, path, s, false)
		})
	}
	if w, ok := f["wait"]; ok {
		if b, ok := p.boolean(w.val, join(path, "wait")); ok {
			h.Wait = b
		}
	}
	if tn, t, ok := str("timeout"); ok {
		d, err := time.ParseDuration(t)
		switch {
		case err != nil:
			p.errorf(tn, join(path, "timeout"), "must be a duration such as 5m or 90s, got %q", t)
		case d <= 0:
			p.errorf(tn, join(path, "timeout"), "must be positive, got %q", t)
		default:
			h.Timeout = d
		}
	}
	return h
}

// chartURL checks an oci:// chart URL.
func (p *parser) chartURL(n *yaml.Node, path, s string) {
	rest, ok := strings.CutPrefix(s, "oci://")
	if !ok {
		p.errorf(n, path, "must be an oci:// URL such as oci://ghcr.io/acme/charts/metrics (use path: for a chart folder in the repository), got %q", s)
		return
	}
	if i := strings.LastIndex(rest, "/"); strings.Contains(rest, "@") || (i >= 0 && strings.Contains(rest[i+1:], ":")) {
		p.errorf(n, path, "%q must not carry a tag or digest: set version: (and let the lock step write digest:)", s)
		return
	}
	if len(rest) > 255 || !chartRE.MatchString(rest) {
		p.errorf(n, path, "%q is not a valid OCI repository URL: it needs oci://, a registry host and a lowercase repository path, such as oci://ghcr.io/acme/charts/metrics", s)
	}
}

// relPath checks a path relative to the root of the repository; dot
// allows "." itself.
func (p *parser) relPath(n *yaml.Node, path, s string, dot bool) {
	if s == "." && dot {
		return
	}
	if s == "" || s == "." || strings.ContainsAny(s, "\\\x00") || !fs.ValidPath(s) {
		p.errorf(n, path, "%q must be a clean relative path inside the repository, with '/' separators and no '..', '.' or leading '/'", s)
	}
}

// values decodes inline Helm values; aliases are allowed in them.
func (p *parser) values(n *yaml.Node, path string) map[string]any {
	for i := 0; i < 100 && n.Kind == yaml.AliasNode && n.Alias != nil; i++ {
		n = n.Alias
	}
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, path, "must be a mapping, got %s", describe(n))
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
					p.errorf(k, path, "keys must be strings, got %s (quote it)", describe(k))
					bad = true
					continue
				}
				walk(v, join(path, k.Value), depth+1)
			}
		}
	}
	walk(n, path, 0)
	if bad {
		return nil
	}
	var m map[string]any
	if err := decodeNode(n, &m); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for _, msg := range te.Errors {
				line := n.Line
				if sm := yamlLine.FindStringSubmatch(msg); sm != nil {
					line, _ = strconv.Atoi(sm[1])
					msg = sm[2]
				}
				p.errs = append(p.errs, &Error{File: p.file, Line: line, Field: path, Msg: msg})
			}
		} else {
			p.errorf(n, path, "%v", err)
		}
		return nil
	}
	return m
}

// decodeNode decodes n, turning a panic of yaml.v3 into an error.
func decodeNode(n *yaml.Node, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("invalid YAML: %v", r)
		}
	}()
	return n.Decode(v)
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// suggest returns the known field closest to s, if it is close enough to
// be a typo.
func suggest(s string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := distance(strings.ToLower(s), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// distance is the Levenshtein distance of a and b, capped for long inputs.
func distance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
