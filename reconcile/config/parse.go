package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/internal/yamlstrict"
	"github.com/berth-dev/berth/source/mirror"
	"github.com/berth-dev/berth/source/selector"
)

// Parse parses and validates an agent configuration and fills in its
// defaults. name is the file name used in errors; relative paths in the
// file are resolved against its folder. All the problems found are
// returned at once, joined, each an *Error.
func Parse(name string, data []byte) (*Config, error) {
	p := &parser{Parser: yamlstrict.Parser{File: name}, base: filepath.Dir(name), lines: map[string]int{}}
	root := p.Document(data, "an agent configuration needs at least one source under sources:", "an agent configuration")
	if root == nil {
		return nil, p.Err()
	}
	c := p.config(root)
	if p.Failed() {
		return nil, p.Err()
	}
	c.File = name
	c.lines = p.lines
	return c, nil
}

// parser walks the nodes of an agent configuration.
type parser struct {
	yamlstrict.Parser
	// base is the folder relative paths are resolved against.
	base string
	// lines are the lines of the file paths, by field path.
	lines map[string]int
}

type fields = map[string]yamlstrict.Field

var join = yamlstrict.Join

// boolean sets *dst to the boolean field name of f, when set.
func (p *parser) boolean(f fields, path, name string, dst *bool) {
	if fv, ok := f[name]; ok {
		if b, ok := p.Bool(fv.Val, join(path, name)); ok {
			*dst = b
		}
	}
}

// mapping returns the fields of the mapping field name of f and its value
// node; nil when it is absent, null or not a mapping.
func (p *parser) mapping(f fields, path, name string, known ...string) (fields, *yaml.Node) {
	fv, ok := f[name]
	if !ok || yamlstrict.IsNull(fv.Val) {
		return nil, nil
	}
	return p.Mapping(fv.Val, join(path, name), known...), fv.Val
}

// file checks a file path and returns it resolved against the folder of
// the configuration; "" when it is not valid.
func (p *parser) file(n *yaml.Node, path, s string) string {
	if s == "" || strings.ContainsRune(s, 0) {
		p.Errorf(n, path, "must be a path, got %q", s)
		return ""
	}
	p.lines[path] = n.Line
	if filepath.IsAbs(s) {
		return filepath.Clean(s)
	}
	return filepath.Join(p.base, s)
}

// fileField sets *dst to the path field name of f, when set.
func (p *parser) fileField(f fields, path, name string, dst *string) {
	if n, s, ok := p.StrField(f, path, name); ok {
		*dst = p.file(n, join(path, name), s)
	}
}

var (
	// labelRE matches a DNS label.
	labelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	// tagRE matches an OCI tag.
	tagRE = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	// digestRE matches a sha256 digest.
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	// hostPart matches a registry host and optional port.
	hostPart = `(?P<host>[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[a-fA-F0-9:.]+\])(?::(?P<port>[0-9]+))?`
	repoPart = `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*`
	// hostRE matches a host name.
	hostRE = regexp.MustCompile(`^[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*$`)
	// repoRE matches a registry host, optional port and repository path.
	repoRE = regexp.MustCompile(`^` + hostPart + `/(?P<repo>` + repoPart + `)$`)
	// prefixRE matches a registry host, optional port and optional path.
	prefixRE = regexp.MustCompile(`^` + hostPart + `(?:/(?P<repo>` + repoPart + `))?$`)
	// mediaTypeRE matches a media type (RFC 6838 names).
	mediaTypeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$`)
)

// name checks a name: a DNS label of at most max characters.
func (p *parser) name(n *yaml.Node, path, s string, max int) bool {
	if len(s) > max || !labelRE.MatchString(s) {
		p.Errorf(n, path, "invalid name %q: use at most %d lowercase letters, digits and '-', starting and ending with a letter or digit", s, max)
		return false
	}
	return true
}

func (p *parser) config(root *yaml.Node) *Config {
	c := &Config{
		StateDir:      DefaultStateDir,
		KeepRevisions: DefaultKeepRevisions,
		Log:           Log{Format: DefaultLogFormat, Level: DefaultLogLevel},
		Apply:         Apply{Compose: ComposeOptions{WaitTimeout: DefaultComposeWaitTimeout}},
	}
	f := p.Mapping(root, "", "stateDir", "keepRevisions", "allowDowngrade", "listen", "socket", "log", "extensions", "sources", "registries", "bundles", "apply")
	if f == nil {
		return c
	}
	p.fileField(f, "", "stateDir", &c.StateDir)
	if fv, ok := f["keepRevisions"]; ok {
		if i, ok := p.Int(fv.Val, "keepRevisions"); ok {
			if i < 1 || i > 1000 {
				p.Errorf(fv.Val, "keepRevisions", "must be between 1 and 1000, got %d", i)
			} else {
				c.KeepRevisions = int(i)
			}
		}
	}
	p.boolean(f, "", "allowDowngrade", &c.AllowDowngrade)
	if n, s, ok := p.StrField(f, "", "listen"); ok && s != "" {
		if p.listen(n, "listen", s) {
			c.Listen = s
		}
	}
	if n, s, ok := p.StrField(f, "", "socket"); ok {
		if c.Socket = p.file(n, "socket", s); len(c.Socket) > maxSocketPath {
			p.Errorf(n, "socket", "%q is longer than %d bytes, the most a unix socket path can be: choose a shorter path", c.Socket, maxSocketPath)
		}
	} else if _, set := f["socket"]; !set {
		c.Socket = filepath.Join(c.StateDir, SocketName)
		if len(c.Socket) > maxSocketPath {
			p.Errorf(f["stateDir"].Val, "stateDir", "the API socket %q would be longer than %d bytes, the most a unix socket path can be: set socket: to a shorter path", c.Socket, maxSocketPath)
		}
	}
	if lf, _ := p.mapping(f, "", "log", "format", "level"); lf != nil {
		if n, s, ok := p.StrField(lf, "log", "format"); ok {
			if s != "text" && s != "json" {
				p.Errorf(n, "log.format", "must be text or json, got %q", s)
			} else {
				c.Log.Format = s
			}
		}
		if n, s, ok := p.StrField(lf, "log", "level"); ok {
			switch s {
			case "debug", "info", "warn", "error":
				c.Log.Level = s
			default:
				p.Errorf(n, "log.level", "must be debug, info, warn or error, got %q", s)
			}
		}
	}
	if e, ok := f["extensions"]; ok {
		c.Extensions = p.Strings(e.Val, "extensions", func(n *yaml.Node, path, s string) {
			p.name(n, path, s, 53)
		})
	}
	type srcNode struct {
		n    *yaml.Node
		path string
	}
	var srcNodes []srcNode // of c.Sources
	switch sf, ok := f["sources"]; {
	case !ok:
		p.Missing(root, root, "", "sources", " (the OCI repositories this device tracks)")
	case yamlstrict.IsNull(sf.Val) || sf.Val.Kind == yaml.SequenceNode && len(sf.Val.Content) == 0:
		p.Errorf(sf.Val, "sources", "needs at least one source")
	default:
		names := map[string]int{}
		for i, n := range p.ListField(f, "", "sources") {
			path := yamlstrict.Index("sources", i)
			src := p.source(n, path)
			if src == nil {
				continue
			}
			srcNodes = append(srcNodes, srcNode{n, path})
			if src.Name != "" {
				if first, dup := names[src.Name]; dup {
					p.Errorf(n, join(path, "name"), "duplicate source name %q (first at line %d)", src.Name, first)
				} else {
					names[src.Name] = n.Line
				}
			}
			c.Sources = append(c.Sources, *src)
		}
	}
	for i, n := range p.ListField(f, "", "registries") {
		if r := p.registry(n, yamlstrict.Index("registries", i)); r != nil {
			c.Registries = append(c.Registries, *r)
		}
	}
	if bf, _ := p.mapping(f, "", "bundles", "pushTo", "insecure", "caFile", "credentials"); bf != nil {
		if n, v, ok := p.StrField(bf, "bundles", "pushTo"); ok && p.prefix(n, "bundles.pushTo", v) {
			c.Bundles.PushTo = v
		}
		p.boolean(bf, "bundles", "insecure", &c.Bundles.Insecure)
		p.fileField(bf, "bundles", "caFile", &c.Bundles.CAFile)
		if cf, _ := p.mapping(bf, "bundles", "credentials", "dockerConfig"); cf != nil {
			p.fileField(cf, "bundles.credentials", "dockerConfig", &c.Bundles.Credentials.DockerConfig)
		}
		if c.Bundles.PushTo == "" {
			if _, set := bf["pushTo"]; !set {
				p.Missing(f["bundles"].Val, f["bundles"].Val, "bundles", "pushTo", " (the local registry, REGISTRY[/PREFIX], bundles are pushed to)")
			}
		}
		if _, ok := bf["caFile"]; ok && c.Bundles.Insecure {
			p.Errorf(bf["insecure"].Key, "bundles", "has both caFile and insecure: plain HTTP uses no certificate, remove one of them")
		}
	}
	if !p.Failed() && len(c.Registries) > 0 {
		for i, s := range c.Sources {
			sn := srcNodes[i]
			p.tagEndpoints(sn.n, sn.path, s, c.Registries)
		}
	}
	if af, _ := p.mapping(f, "", "apply", "compose", "helm"); af != nil {
		if cf, _ := p.mapping(af, "apply", "compose", "host", "waitTimeout", "envDir"); cf != nil {
			c.Apply.Compose.Enabled = true
			if n, s, ok := p.StrField(cf, "apply.compose", "host"); ok {
				if p.dockerHost(n, "apply.compose.host", s) {
					c.Apply.Compose.Host = s
				}
			}
			if fv, ok := cf["waitTimeout"]; ok {
				if d, ok := p.Duration(fv.Val, "apply.compose.waitTimeout", MinTimeout); ok {
					c.Apply.Compose.WaitTimeout = d
				}
			}
			p.fileField(cf, "apply.compose", "envDir", &c.Apply.Compose.EnvDir)
		}
		if hf, _ := p.mapping(af, "apply", "helm", "kubeconfig", "valuesDir"); hf != nil {
			c.Apply.Helm.Enabled = true
			p.fileField(hf, "apply.helm", "kubeconfig", &c.Apply.Helm.Kubeconfig)
			p.fileField(hf, "apply.helm", "valuesDir", &c.Apply.Helm.ValuesDir)
		}
	}
	return c
}

// listen checks a TCP address.
func (p *parser) listen(n *yaml.Node, path, s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		p.Errorf(n, path, "must be host:port such as 127.0.0.1:9797, got %q", s)
		return false
	}
	if pn, err := strconv.Atoi(port); err != nil || pn < 1 || pn > 65535 {
		p.Errorf(n, path, "port must be a number from 1 to 65535, got %q", port)
		return false
	}
	if host != "" && net.ParseIP(host) == nil && !hostRE.MatchString(host) {
		p.Errorf(n, path, "host must be an IP address or a host name, got %q", host)
		return false
	}
	return true
}

// dockerHost checks a Docker Engine address.
func (p *parser) dockerHost(n *yaml.Node, path, s string) bool {
	u, err := url.Parse(s)
	if err == nil {
		switch u.Scheme {
		case "unix", "npipe":
			if u.Path != "" {
				return true
			}
		case "tcp", "ssh", "http", "https":
			if u.Host != "" {
				return true
			}
		}
	}
	p.Errorf(n, path, "must be a Docker host such as unix:///var/run/docker.sock or tcp://10.0.0.2:2376, got %q", s)
	return false
}

func (p *parser) source(n *yaml.Node, path string) *Source {
	f := p.Mapping(n, path, "name", "url", "ref", "filter", "layerSelector", "interval", "timeout", "jitter", "suspend",
		"verify", "insecureSkipVerify", "credentials", "caFile", "insecure", "limits")
	if f == nil {
		return nil
	}
	s := &Source{Interval: DefaultInterval, Timeout: DefaultTimeout, Jitter: DefaultJitter, Limits: defaultLimits}
	if _, ok := f["name"]; !ok {
		p.Missing(n, n, path, "name", " (a DNS label naming the source in commands and state)")
	} else if vn, v, ok := p.StrField(f, path, "name"); ok && p.name(vn, join(path, "name"), v, 63) {
		s.Name = v
	}
	isFile := false
	if _, ok := f["url"]; !ok {
		p.Missing(n, n, path, "url", " (such as oci://registry.example.com/fleet/line-3)")
	} else if vn, v, ok := p.StrField(f, path, "url"); ok {
		if isFile = strings.HasPrefix(v, FileScheme); isFile {
			s.File, ok = p.fileURL(vn, join(path, "url"), v)
		} else {
			s.Registry, s.Repository, ok = p.url(vn, join(path, "url"), v)
		}
		if ok {
			s.URL = v
		}
	}
	if isFile {
		// A bundle applies the state it was made from: nothing to select.
		for _, k := range []string{"ref", "filter"} {
			if fv, ok := f[k]; ok {
				p.Errorf(fv.Key, join(path, k), "does not apply to a file:// source: it applies the state its bundle was made from, verified (remove %s)", k)
			}
		}
	} else {
		p.tracking(n, path, f, s)
	}
	if lf, _ := p.mapping(f, path, "layerSelector", "mediaType"); lf != nil {
		if vn, v, ok := p.StrField(lf, join(path, "layerSelector"), "mediaType"); ok {
			if !mediaTypeRE.MatchString(v) {
				p.Errorf(vn, join(path, "layerSelector.mediaType"), "must be a media type such as application/vnd.cncf.flux.content.v1.tar+gzip, got %q", v)
			} else {
				s.LayerSelector.MediaType = v
			}
		}
	}
	if fv, ok := f["interval"]; ok {
		if d, ok := p.Duration(fv.Val, join(path, "interval"), MinInterval); ok {
			s.Interval = d
		}
	}
	if fv, ok := f["timeout"]; ok {
		if d, ok := p.Duration(fv.Val, join(path, "timeout"), MinTimeout); ok {
			s.Timeout = d
		}
	}
	if fv, ok := f["jitter"]; ok {
		if j, ok := p.Float(fv.Val, join(path, "jitter")); ok {
			if j < 0 || j > MaxJitter {
				p.Errorf(fv.Val, join(path, "jitter"), "must be between 0 and %g (a fraction of the interval), got %s", MaxJitter, fv.Val.Value)
			} else {
				s.Jitter = j
			}
		}
	}
	p.boolean(f, path, "suspend", &s.Suspend)
	p.trust(n, path, f, s)
	if cf, _ := p.mapping(f, path, "credentials", "dockerConfig"); cf != nil {
		p.fileField(cf, join(path, "credentials"), "dockerConfig", &s.Credentials.DockerConfig)
	}
	p.fileField(f, path, "caFile", &s.CAFile)
	p.boolean(f, path, "insecure", &s.Insecure)
	if s.Insecure {
		if _, ok := f["caFile"]; ok {
			p.Errorf(f["insecure"].Key, path, "has both caFile and insecure: plain HTTP uses no certificate, remove one of them")
		}
	}
	if lf, _ := p.mapping(f, path, "limits", "maxSize", "maxFiles"); lf != nil {
		lp := join(path, "limits")
		if fv, ok := lf["maxSize"]; ok {
			if i, ok := p.Int(fv.Val, join(lp, "maxSize")); ok {
				if i < 1 {
					p.Errorf(fv.Val, join(lp, "maxSize"), "must be a positive number of bytes, got %d", i)
				} else {
					s.Limits.MaxSize = i
				}
			}
		}
		if fv, ok := lf["maxFiles"]; ok {
			if i, ok := p.Int(fv.Val, join(lp, "maxFiles")); ok {
				if i < 1 || i > 1<<31-1 {
					p.Errorf(fv.Val, join(lp, "maxFiles"), "must be between 1 and %d, got %d", 1<<31-1, i)
				} else {
					s.Limits.MaxFiles = int(i)
				}
			}
		}
	}
	return s
}

// fileURL checks the URL of a bundle source, file:///ABSOLUTE/PATH, and
// returns the path.
func (p *parser) fileURL(n *yaml.Node, path, s string) (string, bool) {
	u, err := url.Parse(s)
	switch {
	case err != nil || strings.ContainsRune(s, 0):
		p.Errorf(n, path, "%q is not a file URL such as file:///media/usb/site.tar", s)
	case u.Host != "" && u.Host != "localhost":
		p.Errorf(n, path, "%q names the host %q: a file:// source is a file on the device, written file:///ABSOLUTE/PATH such as file:///media/usb/site.tar", s, u.Host)
	case u.Opaque != "" || !strings.HasPrefix(u.Path, "/"):
		p.Errorf(n, path, "%q is not an absolute path: write file:///ABSOLUTE/PATH such as file:///media/usb/site.tar", s)
	case u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(u.Path, "/"):
		p.Errorf(n, path, "%q must name a bundle file, such as file:///media/usb/site.tar (no query, fragment or trailing /)", s)
	case filepath.Clean(u.Path) != u.Path:
		p.Errorf(n, path, "%q is not a clean path: write it as file://%s", s, filepath.Clean(u.Path))
	default:
		p.lines[path] = n.Line
		return u.Path, true
	}
	return "", false
}

// url checks the URL of a source and returns its registry and repository.
func (p *parser) url(n *yaml.Node, path, s string) (registry, repository string, ok bool) {
	rest, isOCI := strings.CutPrefix(s, "oci://")
	switch {
	case !isOCI:
		hint := ""
		if !strings.Contains(s, "://") {
			hint = " (add oci://)"
		}
		p.Errorf(n, path, "must be an oci:// URL such as oci://registry.example.com/fleet/line-3, or a bundle file:///PATH, got %q%s", redact(s), hint)
		return "", "", false
	}
	host, _, _ := strings.Cut(rest, "/")
	switch {
	case strings.Contains(host, "@"):
		p.Errorf(n, path, "must not carry credentials: put them in the Docker config.json that credentials.dockerConfig names")
		return "", "", false
	case strings.Contains(rest, "@") || strings.Contains(rest[len(host):], ":"):
		p.Errorf(n, path, "%q must not carry a tag or digest: set ref.tag, ref.digest or ref.semver", s)
		return "", "", false
	}
	m := repoRE.FindStringSubmatch(rest)
	if m == nil || len(rest) > 255 {
		msg := fmt.Sprintf("%q is not a valid repository URL: it needs oci://, a registry host and a repository path, such as oci://registry.example.com/fleet/line-3", s)
		if lower := host + strings.ToLower(rest[len(host):]); lower != rest && repoRE.MatchString(lower) {
			msg = fmt.Sprintf("%q: the repository path must be lowercase", s)
		}
		p.Errorf(n, path, "%s", msg)
		return "", "", false
	}
	if !p.HostPort(n, path, m[repoRE.SubexpIndex("host")], m[repoRE.SubexpIndex("port")]) {
		return "", "", false
	}
	return host, m[repoRE.SubexpIndex("repo")], true
}

// redact hides the credentials of a URL.
func redact(s string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		rest := s[i+3:]
		host, _, _ := strings.Cut(rest, "/")
		if j := strings.LastIndex(host, "@"); j >= 0 {
			return s[:i+3] + "***@" + rest[j+1:]
		}
	}
	return s
}

// tracking parses ref and filter, and validates them with the selector.
func (p *parser) tracking(n *yaml.Node, path string, f fields, s *Source) {
	before := p.Len()
	nodes := map[string]*yaml.Node{} // selector field -> value node
	rpath, fpath := join(path, "ref"), join(path, "filter")
	ff, fnode := p.mapping(f, path, "filter", "pattern", "extract", "order", "direction")
	if ff != nil {
		s.Filter = &Filter{}
		if _, ok := ff["pattern"]; !ok {
			p.Missing(fnode, fnode, fpath, "pattern", " (a regular expression the tags must match)")
		}
		for _, x := range []struct {
			name string
			dst  *string
		}{{"pattern", &s.Filter.Pattern}, {"extract", &s.Filter.Extract}, {"order", &s.Filter.Order}, {"direction", &s.Filter.Direction}} {
			if vn, v, ok := p.StrField(ff, fpath, x.name); ok {
				*x.dst, nodes[x.name] = v, vn
			}
		}
	}
	filter := fnode != nil
	rf, rnode := p.mapping(f, path, "ref", "tag", "digest", "semver", "semverFilter")
	switch {
	case rf != nil:
		var set []string
		for _, k := range []string{"tag", "digest", "semver"} {
			if fv, ok := rf[k]; ok {
				set = append(set, k)
				if filter && k != "semver" {
					p.Errorf(fv.Key, join(rpath, k), "does not apply with filter: the filter picks the tag, remove one of them")
				}
			}
		}
		if !filter && len(set) != 1 && !(len(set) == 0 && (p.Typo(rnode, "tag") || p.Typo(rnode, "digest") || p.Typo(rnode, "semver"))) {
			p.Errorf(rnode, rpath, "give exactly one of tag, digest or semver")
		}
		if vn, v, ok := p.StrField(rf, rpath, "tag"); ok {
			if !tagRE.MatchString(v) {
				p.Errorf(vn, join(rpath, "tag"), "invalid tag %q: use up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'", v)
			} else {
				s.Ref.Tag = v
			}
		}
		if vn, v, ok := p.StrField(rf, rpath, "digest"); ok {
			if !digestRE.MatchString(v) {
				p.Errorf(vn, join(rpath, "digest"), "must be sha256: followed by 64 lowercase hex digits, got %q", v)
			} else {
				s.Ref.Digest = v
			}
		}
		for _, x := range []struct {
			name string
			dst  *string
		}{{"semver", &s.Ref.Semver}, {"semverFilter", &s.Ref.SemverFilter}} {
			if vn, v, ok := p.StrField(rf, rpath, x.name); ok {
				*x.dst, nodes[x.name] = v, vn
			}
		}
		if fv, ok := rf["semverFilter"]; ok && !filter && len(set) == 1 && set[0] != "semver" {
			p.Errorf(fv.Key, join(rpath, "semverFilter"), "only applies with semver")
		}
	case rnode == nil && !filter:
		if fv, ok := f["ref"]; ok {
			p.Errorf(fv.Val, rpath, "give exactly one of tag, digest or semver")
		} else if !p.Typo(n, "filter") {
			p.Missing(n, n, path, "ref", " (give exactly one of tag, digest or semver, or a filter)")
		}
	}
	if p.Len() != before || (s.Ref.Semver == "" && s.Filter == nil) {
		return
	}
	sel, err := selector.New(s.SelectorPolicy())
	if err == nil {
		if s.Filter != nil {
			s.Filter.Order, s.Filter.Direction = sel.Policy().Order, sel.Policy().Direction
		}
		return
	}
	pes := selector.PolicyErrors(err)
	if len(pes) == 0 {
		p.Errorf(n, path, "%v", err)
	}
	for _, pe := range pes {
		parent, ppath := fnode, fpath
		if pe.Field == "semver" || pe.Field == "semverFilter" {
			parent, ppath = rnode, rpath
		}
		at := nodes[pe.Field]
		if at == nil {
			if parent != nil && p.Typo(parent, pe.Field) {
				continue
			}
			at = parent
		}
		if at == nil {
			at = n
		}
		p.Errorf(at, join(ppath, pe.Field), "%s", pe.Msg)
	}
}

// trust parses verify and insecureSkipVerify.
func (p *parser) trust(n *yaml.Node, path string, f fields, s *Source) {
	vpath := join(path, "verify")
	p.boolean(f, path, "insecureSkipVerify", &s.InsecureSkipVerify)
	vf, vnode := p.mapping(f, path, "verify", "keys", "keyless")
	switch {
	case vnode != nil && s.InsecureSkipVerify:
		p.Errorf(f["insecureSkipVerify"].Key, path, "has both verify and insecureSkipVerify: true; remove one of them")
	case vnode == nil && !s.InsecureSkipVerify:
		isv, set := f["insecureSkipVerify"]
		badISV := set && (isv.Val.Kind != yaml.ScalarNode || isv.Val.ShortTag() != "!!bool")
		if !badISV && !p.Typo(n, "verify") && !p.Typo(n, "insecureSkipVerify") {
			p.Errorf(n, path, "has no verify: set verify.keys or verify.keyless, or insecureSkipVerify: true to apply artifacts without checking their signatures (not recommended)")
		}
	}
	if vf == nil {
		return
	}
	before := p.Len()
	v := &Verify{}
	s.Verify = v
	if kf, ok := vf["keys"]; ok {
		p.Strings(kf.Val, join(vpath, "keys"), func(kn *yaml.Node, kp, k string) {
			if name, ok := strings.CutPrefix(k, "env://"); ok {
				if name == "" {
					p.Errorf(kn, kp, "env:// needs the name of an environment variable, such as env://COSIGN_PUBLIC_KEY")
				}
				p.lines[kp] = kn.Line
				v.Keys = append(v.Keys, k)
				return
			}
			v.Keys = append(v.Keys, p.file(kn, kp, k))
		})
	}
	kpath := join(vpath, "keyless")
	if kl, knode := p.mapping(vf, vpath, "keyless", "trustedRoot", "identities"); kl != nil {
		v.Keyless = &Keyless{}
		if _, ok := kl["trustedRoot"]; !ok {
			p.Missing(knode, knode, kpath, "trustedRoot", " (a sigstore trusted_root.json)")
		}
		p.fileField(kl, kpath, "trustedRoot", &v.Keyless.TrustedRoot)
		ipath := join(kpath, "identities")
		if _, ok := kl["identities"]; !ok {
			p.Missing(knode, knode, kpath, "identities", " (the signers accepted: issuer and subject regular expressions)")
		} else if iv := kl["identities"].Val; yamlstrict.IsNull(iv) || iv.Kind == yaml.SequenceNode && len(iv.Content) == 0 {
			p.Errorf(iv, ipath, "needs at least one identity (issuer and subject regular expressions)")
		} else {
			for i, in := range p.ListField(kl, kpath, "identities") {
				if id := p.identity(in, yamlstrict.Index(ipath, i)); id != nil {
					v.Keyless.Identities = append(v.Keyless.Identities, *id)
				}
			}
		}
	}
	if len(v.Keys) == 0 && v.Keyless == nil && p.Len() == before && !p.Typo(vnode, "keys") && !p.Typo(vnode, "keyless") {
		p.Errorf(vnode, vpath, "needs keys, keyless or both")
	}
}

// identity parses a keyless identity.
func (p *parser) identity(n *yaml.Node, path string) *Identity {
	f := p.Mapping(n, path, "issuer", "subject")
	if f == nil {
		return nil
	}
	id := &Identity{}
	for _, x := range []struct {
		name, what string
		dst        *string
	}{
		{"issuer", `the OIDC issuer, such as ^https://token\.actions\.githubusercontent\.com$`, &id.Issuer},
		{"subject", `the signer, such as ^https://github\.com/acme/fleet/`, &id.Subject},
	} {
		if _, ok := f[x.name]; !ok {
			p.Missing(n, n, path, x.name, " (a regular expression matching "+x.what+")")
			continue
		}
		vn, v, ok := p.StrField(f, path, x.name)
		if !ok {
			continue
		}
		if v == "" {
			p.Errorf(vn, join(path, x.name), "must not be empty: write a regular expression matching %s", x.what)
			continue
		}
		if _, err := regexp.Compile(v); err != nil {
			p.Errorf(vn, join(path, x.name), "invalid regular expression %q: %s", v, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
			continue
		}
		*x.dst = v
	}
	return id
}

// registry parses a mirror setting.
func (p *parser) registry(n *yaml.Node, path string) *Registry {
	f := p.Mapping(n, path, "source", "mirrors", "allowTags", "sourceFallback")
	if f == nil {
		return nil
	}
	r := &Registry{SourceFallback: true}
	if _, ok := f["source"]; !ok {
		p.Missing(n, n, path, "source", " (a registry host or host/path prefix, such as ghcr.io/acme)")
	} else if vn, v, ok := p.StrField(f, path, "source"); ok && p.prefix(vn, join(path, "source"), v) {
		r.Source = v
	}
	if fv, ok := f["mirrors"]; !ok {
		p.Missing(n, n, path, "mirrors", " (registry hosts or host/path prefixes, in order)")
	} else {
		mpath := join(path, "mirrors")
		r.Mirrors = p.Strings(fv.Val, mpath, func(mn *yaml.Node, ip, s string) {
			if p.prefix(mn, ip, s) && s == r.Source {
				p.Errorf(mn, ip, "%q is the source itself", s)
			}
		})
		if len(r.Mirrors) == 0 && (yamlstrict.IsNull(fv.Val) || fv.Val.Kind == yaml.SequenceNode && len(fv.Val.Content) == 0) {
			p.Errorf(fv.Val, mpath, "needs at least one mirror")
		}
	}
	p.boolean(f, path, "allowTags", &r.AllowTags)
	p.boolean(f, path, "sourceFallback", &r.SourceFallback)
	return r
}

// tagEndpoints reports a source that tracks tags (tag, semver or filter)
// when the registries: that apply to it leave nowhere to resolve a tag: no
// mirror with allowTags and sourceFallback off (see package mirror).
func (p *parser) tagEndpoints(n *yaml.Node, path string, s Source, regs []Registry) {
	if s.File != "" || s.Ref.Digest != "" || s.Registry == "" {
		return
	}
	sets := make([]mirror.Set, len(regs))
	for i, r := range regs {
		sets[i] = mirror.Set{Source: r.Source, Mirrors: r.Mirrors, AllowTags: r.AllowTags, SourceFallback: r.SourceFallback}
	}
	res, err := mirror.New(sets)
	if err != nil {
		p.Errorf(n, "registries", "%v", err)
		return
	}
	if _, err := res.Resolve(s.Registry + "/" + s.Repository + ":latest"); errors.Is(err, mirror.ErrTagNeedsSource) {
		src, _ := res.Source(s.Registry + "/" + s.Repository)
		what := "ref"
		if s.Filter != nil {
			what = "filter"
		}
		at := n
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == what {
				at = n.Content[i]
			}
		}
		p.Errorf(at, join(path, what), "tracks tags, but the registries: entries for %s leave nowhere to resolve a tag: their mirrors serve digests only and sourceFallback is off; pin ref.digest, set allowTags: true on a mirror trusted with tags, or sourceFallback: true", src)
	}
}

// prefix checks a registry host or host/path prefix.
func (p *parser) prefix(n *yaml.Node, path, s string) bool {
	var msg string
	m := prefixRE.FindStringSubmatch(s)
	switch {
	case strings.Contains(s, "://"):
		msg = fmt.Sprintf("must be a host or host/path prefix without a scheme, such as ghcr.io/acme, got %q", redact(s))
	case strings.Contains(s, "@"):
		msg = "must be a host or host/path prefix, without credentials, tag or digest"
	case m == nil || len(s) > 255:
		msg = fmt.Sprintf("%q is not a registry host or host/path prefix such as ghcr.io/acme or registry.local:5000/acme (the path is lowercase, without tag or trailing /)", s)
	case !strings.ContainsAny(m[prefixRE.SubexpIndex("host")], ".:[") && m[prefixRE.SubexpIndex("host")] != "localhost" && m[prefixRE.SubexpIndex("port")] == "":
		// Docker reads such a name as a repository on Docker Hub.
		msg = fmt.Sprintf("%q does not name a registry host: give a domain (registry.plant.local), an IP, a port (plant:5000) or localhost", s)
	default:
		return p.HostPort(n, path, m[prefixRE.SubexpIndex("host")], m[prefixRE.SubexpIndex("port")])
	}
	p.Errorf(n, path, "%s", msg)
	return false
}
