package config

import (
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/internal/yamlstrict"
)

// Parse parses and validates an agent configuration and fills in its
// defaults. name is the file name used in errors; relative paths in the
// file are resolved against its folder. All the problems found are
// returned at once, joined, each an *Error.
func Parse(name string, data []byte) (*Config, error) {
	p := &parser{Parser: yamlstrict.Parser{File: name, Elsewhere: elsewhere}, base: filepath.Dir(name), lines: map[string]int{}}
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

// elsewhere says where the fields of agent.yaml belong, for a field found
// in the wrong mapping (yamlstrict.Parser.Elsewhere).
var elsewhere = func() map[string]string {
	m := map[string]string{
		"keys":         "did you mean verify.keys?",
		"keyless":      "did you mean verify.keyless?",
		"trustedRoot":  "did you mean verify.keyless.trustedRoot?",
		"identities":   "did you mean verify.keyless.identities?",
		"dockerConfig": "did you mean credentials.dockerConfig?",
		"compose":      "did you mean apply.compose? apply is a top-level key",
		"helm":         "did you mean apply.helm? apply is a top-level key",
		"mirrors":      "mirrors belong to an entry of the top-level registries:",
		"allowTags":    "allowTags belongs to an entry of the top-level registries:",
		"pushTo":       "did you mean bundles.pushTo? bundles is a top-level key",
	}
	for _, k := range []string{"tag", "digest", "semver", "semverFilter"} {
		m[k] = "did you mean ref." + k + "? a source's tag, digest or range goes under ref:"
	}
	for _, k := range []string{"apply", "sources", "registries", "bundles", "extensions", "stateDir", "listen", "socket", "log", "keepRevisions", "allowDowngrade"} {
		m[k] = k + " is a top-level key"
	}
	return m
}()

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
		MinFreeSpace:  DefaultMinFreeSpace,
		Log:           Log{Format: DefaultLogFormat, Level: DefaultLogLevel},
		Apply:         Apply{Compose: ComposeOptions{WaitTimeout: DefaultComposeWaitTimeout}},
		Bundles:       Bundles{Timeout: DefaultBundlesTimeout},
	}
	f := p.Mapping(root, "", "stateDir", "keepRevisions", "allowDowngrade", "listen", "socket", "log", "extensions", "sources", "registries", "bundles", "apply", "margo",
		"device", "windows", "report", "maxBandwidth", "minFreeSpace")
	if f == nil {
		return c
	}
	p.settings(f, c)
	p.logSettings(f, c)
	if e, ok := f["extensions"]; ok {
		c.Extensions = p.Strings(e.Val, "extensions", func(n *yaml.Node, path, s string) {
			p.name(n, path, s, 53)
		})
	}
	srcNodes := p.sources(root, f, c)
	p.fleet(f, c, srcNodes)
	for i, n := range p.ListField(f, "", "registries") {
		if r := p.registry(n, yamlstrict.Index("registries", i)); r != nil {
			c.Registries = append(c.Registries, *r)
		}
	}
	p.bundles(f, c)
	if !p.Failed() && len(c.Registries) > 0 {
		for i, s := range c.Sources {
			sn := srcNodes[i]
			p.tagEndpoints(sn.n, sn.path, s, c)
		}
	}
	p.apply(f, c)
	p.margo(f, c)
	p.report(f, c)
	return c
}

// settings parses the agent's own top-level settings: stateDir,
// keepRevisions, allowDowngrade, maxBandwidth, minFreeSpace, listen and
// socket.
func (p *parser) settings(f fields, c *Config) {
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
	p.bandwidth(f, "", &c.MaxBandwidth)
	if fv, ok := f["minFreeSpace"]; ok {
		if m, ok := p.minFree(fv.Val, "minFreeSpace"); ok {
			c.MinFreeSpace = m
		}
	}
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
}

// logSettings parses log.
func (p *parser) logSettings(f fields, c *Config) {
	lf, _ := p.mapping(f, "", "log", "format", "level")
	if lf == nil {
		return
	}
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

// srcNode is where a parsed source stands in the file.
type srcNode struct {
	n    *yaml.Node
	path string
}

// sources parses sources into c.Sources and returns the node of each.
func (p *parser) sources(root *yaml.Node, f fields, c *Config) []srcNode {
	var srcNodes []srcNode
	// "margo:" alone is null: no Margo source, so sources are needed.
	mv, hasMargo := f["margo"]
	hasMargo = hasMargo && !yamlstrict.IsNull(mv.Val)
	switch sf, ok := f["sources"]; {
	case hasMargo && (!ok || yamlstrict.IsNull(sf.Val) || sf.Val.Kind == yaml.SequenceNode && len(sf.Val.Content) == 0):
		// A Margo device may track no OCI source.
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
	return srcNodes
}

// bundles parses bundles.
func (p *parser) bundles(f fields, c *Config) {
	bf, _ := p.mapping(f, "", "bundles", "pushTo", "insecure", "caFile", "credentials", "timeout")
	if bf == nil {
		return
	}
	if fv, ok := bf["timeout"]; ok {
		if d, ok := p.Duration(fv.Val, "bundles.timeout", MinTimeout); ok {
			c.Bundles.Timeout = d
		}
	}
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

// apply parses apply: which appliers run, and their settings.
func (p *parser) apply(f fields, c *Config) {
	af, _ := p.mapping(f, "", "apply", "compose", "helm")
	if af == nil {
		return
	}
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
