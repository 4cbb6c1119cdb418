package replicate

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/internal/yamlstrict"
	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/source/selector"
)

// Parse parses and validates a mirror configuration and fills in its
// defaults. name is the file name used in errors; relative paths in the
// file are resolved against its folder. All the problems found are
// returned at once, joined, each a *yamlstrict.Error that names the file,
// the line and the field:
//
//	interval: 10m          # default interval of every job (daemon mode)
//	concurrency: 4         # tags copied at once
//	registries:            # optional, per registry host
//	  - host: plant.local:5000
//	    insecure: true     # plain HTTP
//	  - host: registry.plant.local
//	    caFile: plant-ca.pem
//	jobs:
//	  - name: line-3
//	    source: ghcr.io/acme/fleet/line-3
//	    targets: [registry.plant.local/acme/fleet/line-3]
//	    semver: ">=1.2 <2"
//	    latest: 3
//	  - source: ghcr.io/acme                 # a prefix, as in the agent's registries:
//	    repositories: [web, charts/metrics]  # ghcr.io/acme/web → registry.plant.local/acme/web
//	    targets: [registry.plant.local/acme]
//	    tags: ["1.4.0", stable]
//	  - name: replica
//	    source: registry.plant.local/acme/fleet/line-3
//	    targets: [plant.local:5000/acme/fleet/line-3]
//	    filter: {pattern: '.*'}              # every tag
func Parse(name string, data []byte) (*Config, error) {
	p := &parser{Parser: yamlstrict.Parser{File: name}, base: filepath.Dir(name)}
	root := p.Document(data, "a mirror configuration needs at least one job under jobs:", "a mirror configuration")
	if root == nil {
		return nil, p.Err()
	}
	c := p.config(root)
	if p.Failed() {
		return nil, p.Err()
	}
	c.File = name
	return c, nil
}

// parser walks the nodes of a mirror configuration.
type parser struct {
	yamlstrict.Parser
	base string
}

type fields = map[string]yamlstrict.Field

var join = yamlstrict.Join

var (
	hostPart = `(?P<host>[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[a-fA-F0-9:.]+\])(?::(?P<port>[0-9]+))?`
	pathPart = `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*`
	// hostRE matches a registry host and optional port.
	hostRE = regexp.MustCompile(`^` + hostPart + `$`)
	// repoRE matches a registry host, optional port and repository path.
	repoRE = regexp.MustCompile(`^` + hostPart + `/(?P<path>` + pathPart + `)$`)
	// prefixRE matches a registry host, optional port and optional path.
	prefixRE = regexp.MustCompile(`^` + hostPart + `(?:/(?P<path>` + pathPart + `))?$`)
	// pathRE matches a repository path.
	pathRE = regexp.MustCompile(`^` + pathPart + `$`)
	// tagRE matches an OCI tag.
	tagRE = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// maxRepoLen bounds a repository name, host included, as distribution does.
const maxRepoLen = 255

func (p *parser) config(root *yaml.Node) *Config {
	c := &Config{Interval: DefaultInterval, Concurrency: DefaultConcurrency}
	f := p.Mapping(root, "", "interval", "concurrency", "registries", "jobs")
	if f == nil {
		return c
	}
	if fv, ok := f["interval"]; ok {
		if d, ok := p.Duration(fv.Val, "interval", MinInterval); ok {
			c.Interval = d
		}
	}
	if fv, ok := f["concurrency"]; ok {
		if i, ok := p.Int(fv.Val, "concurrency"); ok {
			if i < 1 || i > MaxConcurrency {
				p.Errorf(fv.Val, "concurrency", "must be between 1 and %d, got %d", MaxConcurrency, i)
			} else {
				c.Concurrency = int(i)
			}
		}
	}
	hosts := map[string]int{}
	for i, n := range p.ListField(f, "", "registries") {
		path := yamlstrict.Index("registries", i)
		r := p.registry(n, path)
		if r == nil {
			continue
		}
		h := strings.ToLower(r.Host)
		if first, dup := hosts[h]; dup {
			p.Errorf(n, join(path, "host"), "%q is listed twice (first at line %d)", r.Host, first)
			continue
		}
		hosts[h] = n.Line
		c.Registries = append(c.Registries, *r)
	}
	switch jf, ok := f["jobs"]; {
	case !ok:
		p.Missing(root, root, "", "jobs", " (the repositories to keep in sync)")
	case yamlstrict.IsNull(jf.Val) || jf.Val.Kind == yaml.SequenceNode && len(jf.Val.Content) == 0:
		p.Errorf(jf.Val, "jobs", "needs at least one job")
	default:
		names := map[string]int{}
		before := p.Len()
		for i, n := range p.ListField(f, "", "jobs") {
			path := yamlstrict.Index("jobs", i)
			j := p.job(n, path, c.Interval)
			if j == nil {
				continue
			}
			if j.Name != "" {
				if first, dup := names[j.Name]; dup {
					p.Errorf(n, join(path, "name"), "duplicate job name %q (first at line %d): give each job its own name", j.Name, first)
				} else {
					names[j.Name] = n.Line
				}
			}
			c.Jobs = append(c.Jobs, *j)
		}
		if p.Len() == before {
			p.graph(c, f["jobs"].Val)
		}
	}
	return c
}

func (p *parser) registry(n *yaml.Node, path string) *Registry {
	f := p.Mapping(n, path, "host", "insecure", "caFile")
	if f == nil {
		return nil
	}
	r := &Registry{}
	if _, ok := f["host"]; !ok {
		p.Missing(n, n, path, "host", " (a registry host, such as registry.plant.local or 10.0.0.5:5000)")
	} else if vn, v, ok := p.StrField(f, path, "host"); ok {
		m := hostRE.FindStringSubmatch(v)
		switch {
		case m == nil || len(v) > maxRepoLen:
			p.Errorf(vn, join(path, "host"), "%q is not a registry host such as registry.plant.local or 10.0.0.5:5000 (no scheme, no path)", v)
		case p.HostPort(vn, join(path, "host"), m[hostRE.SubexpIndex("host")], m[hostRE.SubexpIndex("port")]):
			r.Host = v
		}
	}
	if fv, ok := f["insecure"]; ok {
		if b, ok := p.Bool(fv.Val, join(path, "insecure")); ok {
			r.Insecure = b
		}
	}
	if vn, v, ok := p.StrField(f, path, "caFile"); ok {
		if v == "" || strings.ContainsRune(v, 0) {
			p.Errorf(vn, join(path, "caFile"), "must be a path, got %q", v)
		} else if filepath.IsAbs(v) {
			r.CAFile = filepath.Clean(v)
		} else {
			r.CAFile = filepath.Join(p.base, v)
		}
		if r.Insecure {
			p.Errorf(f["insecure"].Key, path, "has both caFile and insecure: plain HTTP uses no certificate, remove one of them")
		}
	}
	if r.Host == "" {
		return nil
	}
	return r
}

// location checks a repository (prefix false) or a registry host or
// host/path prefix (prefix true).
func (p *parser) location(n *yaml.Node, path, s string, prefix bool) bool {
	re, what := repoRE, "a repository such as ghcr.io/acme/web or registry.plant.local:5000/acme/web"
	if prefix {
		re, what = prefixRE, "a registry host or host/path prefix such as ghcr.io/acme or registry.plant.local:5000/acme"
	}
	m := re.FindStringSubmatch(s)
	var msg string
	switch {
	case strings.Contains(s, "://"):
		msg = fmt.Sprintf("must be %s, without a scheme, got %q", what, redact(s))
	case strings.Contains(s, "@"):
		msg = fmt.Sprintf("must be %s, without credentials or digest, got %q", what, redact(s))
	case m == nil && !prefix && prefixRE.MatchString(s):
		msg = fmt.Sprintf("%q names no repository: give host/path, or list the paths to sync under it in repositories:", s)
	case m == nil && lowerPath(s) != s && re.MatchString(lowerPath(s)):
		msg = fmt.Sprintf("%q: the repository path must be lowercase", s)
	case m == nil && strings.Contains(s[strings.LastIndex(s, "/")+1:], ":") && strings.Contains(s, "/"):
		msg = fmt.Sprintf("%q must not carry a tag: select tags with tags:, semver: or filter:", s)
	case m == nil || len(s) > maxRepoLen:
		msg = fmt.Sprintf("%q is not %s (the path is lowercase, without tag or trailing /)", s, what)
	case !strings.ContainsAny(m[re.SubexpIndex("host")], ".:[") && m[re.SubexpIndex("host")] != "localhost" && m[re.SubexpIndex("port")] == "":
		// Docker reads such a name as a repository on Docker Hub.
		msg = fmt.Sprintf("%q does not start with a registry host: give a domain (registry.plant.local), an IP, a port (plant:5000) or localhost", s)
	default:
		return p.HostPort(n, path, m[re.SubexpIndex("host")], m[re.SubexpIndex("port")])
	}
	p.Errorf(n, path, "%s", msg)
	return false
}

// lowerPath lowercases the part of s after the host.
func lowerPath(s string) string {
	host, rest, found := strings.Cut(s, "/")
	if !found {
		return s
	}
	return host + "/" + strings.ToLower(rest)
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

func (p *parser) job(n *yaml.Node, path string, interval time.Duration) *Job {
	f := p.Mapping(n, path, "name", "source", "repositories", "targets", "tags", "semver", "filter", "latest", "interval")
	if f == nil {
		return nil
	}
	before := p.Len()
	j := &Job{Interval: interval, Line: n.Line}
	if vn, v, ok := p.StrField(f, path, "name"); ok {
		if v == "" || len(v) > 255 || strings.IndexFunc(v, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0 {
			p.Errorf(vn, join(path, "name"), "must be 1 to 255 printable characters without spaces, got %q", v)
		} else {
			j.Name = v
		}
	}
	_, prefixes := f["repositories"]
	if _, ok := f["source"]; !ok {
		p.Missing(n, n, path, "source", " (the upstream repository, such as ghcr.io/acme/web)")
	} else if vn, v, ok := p.StrField(f, path, "source"); ok && p.location(vn, join(path, "source"), v, prefixes) {
		j.Source = v
	}
	if prefixes {
		rpath := join(path, "repositories")
		rv := f["repositories"].Val
		j.Repositories = p.Strings(rv, rpath, func(rn *yaml.Node, ip, s string) {
			if !pathRE.MatchString(s) || len(s) > maxRepoLen {
				p.Errorf(rn, ip, "%q is not a repository path such as web or charts/metrics (lowercase, no host, no leading or trailing /, no tag)", s)
			}
		})
		if yamlstrict.IsNull(rv) || rv.Kind == yaml.SequenceNode && len(rv.Content) == 0 {
			p.Errorf(rv, rpath, "needs at least one repository path; without repositories:, source and targets are repositories themselves")
		}
	}
	tpath := join(path, "targets")
	if fv, ok := f["targets"]; !ok {
		p.Missing(n, n, path, "targets", " (the repositories to copy to)")
	} else {
		j.Targets = p.Strings(fv.Val, tpath, func(tn *yaml.Node, ip, s string) {
			if p.location(tn, ip, s, prefixes) && j.Source != "" && normRepo(s) == normRepo(j.Source) {
				p.Errorf(tn, ip, "%q is the source itself", s)
			}
		})
		if yamlstrict.IsNull(fv.Val) || fv.Val.Kind == yaml.SequenceNode && len(fv.Val.Content) == 0 {
			p.Errorf(fv.Val, tpath, "needs at least one target")
		}
	}
	p.selection(n, path, f, j)
	if fv, ok := f["interval"]; ok {
		if d, ok := p.Duration(fv.Val, join(path, "interval"), MinInterval); ok {
			j.Interval = d
		}
	}
	if p.Len() != before {
		return nil
	}
	if j.Name == "" {
		j.Name = j.Source
	}
	for _, r := range j.Routes(0) {
		for _, t := range append([]string{r.Source}, r.Targets...) {
			if len(t) > maxRepoLen {
				p.Errorf(n, path, "repository %q is longer than %d characters", t, maxRepoLen)
			}
		}
	}
	return j
}

// selection parses tags, semver, filter and latest, in steps: which of
// them are set, each field, then the policy they make together.
func (p *parser) selection(n *yaml.Node, path string, f fields, j *Job) {
	before := p.Len()
	p.selectionKeys(n, path, f)
	p.tagList(f, path, j)
	nodes := map[string]*yaml.Node{}
	if vn, v, ok := p.StrField(f, path, "semver"); ok {
		j.Semver, nodes["semver"] = v, vn
	}
	fnode := p.filterFields(f, path, j, nodes)
	p.latestField(f, path, j)
	pol, ok := j.Policy()
	if !ok || p.Len() != before {
		return
	}
	p.checkPolicy(n, path, pol, fnode, nodes, j)
}

// selectionKeys checks that a job sets tags, semver or filter, and not
// tags with another.
func (p *parser) selectionKeys(n *yaml.Node, path string, f fields) {
	var set []string
	for _, k := range []string{"tags", "semver", "filter"} {
		if _, ok := f[k]; ok {
			set = append(set, k)
		}
	}
	switch {
	case len(set) == 0:
		if !p.Typo(n, "tags") && !p.Typo(n, "semver") && !p.Typo(n, "filter") {
			p.Errorf(n, path, "selects no tag: give tags: [...], semver: \"RANGE\" or filter: {pattern: ...}")
		}
	case slices.Contains(set, "tags") && len(set) > 1:
		p.Errorf(f["tags"].Key, join(path, "tags"), "does not apply with %s: give either explicit tags or a semver range or filter", strings.Join(set[1:], " and "))
	}
}

// tagList parses tags: the explicit tags to sync.
func (p *parser) tagList(f fields, path string, j *Job) {
	if fv, ok := f["tags"]; ok {
		tp := join(path, "tags")
		j.Tags = p.Strings(fv.Val, tp, func(tn *yaml.Node, ip, s string) {
			switch {
			case !tagRE.MatchString(s):
				p.Errorf(tn, ip, "invalid tag %q: use up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'", s)
			case oci.IsSignatureTag(s):
				p.Errorf(tn, ip, "%q is a signature tag: signatures are copied with the artifacts they sign, list the artifact's tag", s)
			}
		})
		if yamlstrict.IsNull(fv.Val) || fv.Val.Kind == yaml.SequenceNode && len(fv.Val.Content) == 0 {
			p.Errorf(fv.Val, tp, "needs at least one tag")
		}
	}
}

// filterFields parses filter:, records the node of each field in nodes
// and returns the filter's node, nil when there is none.
func (p *parser) filterFields(f fields, path string, j *Job, nodes map[string]*yaml.Node) *yaml.Node {
	fpath := join(path, "filter")
	var fnode *yaml.Node
	if fv, ok := f["filter"]; ok {
		fnode = fv.Val
		if ff := p.Mapping(fv.Val, fpath, "pattern", "extract", "order", "direction"); ff != nil {
			j.Filter = &Filter{}
			if _, ok := ff["pattern"]; !ok {
				p.Missing(fv.Val, fv.Val, fpath, "pattern", " (a regular expression the tags must match; '.*' for every tag)")
			}
			for _, x := range []struct {
				name string
				dst  *string
			}{{"pattern", &j.Filter.Pattern}, {"extract", &j.Filter.Extract}, {"order", &j.Filter.Order}, {"direction", &j.Filter.Direction}} {
				if vn, v, ok := p.StrField(ff, fpath, x.name); ok {
					*x.dst, nodes[x.name] = v, vn
				}
			}
		}
	}
	return fnode
}

// latestField parses latest:, which only applies with semver or filter.
func (p *parser) latestField(f fields, path string, j *Job) {
	if fv, ok := f["latest"]; ok {
		if i, ok := p.Int(fv.Val, join(path, "latest")); ok {
			switch {
			case i < 1 || i > MaxLatest:
				p.Errorf(fv.Val, join(path, "latest"), "must be between 1 and %d, got %d", MaxLatest, i)
			case j.Semver == "" && j.Filter == nil:
				p.Errorf(fv.Key, join(path, "latest"), "only applies with semver or filter: it keeps the newest N tags they select")
			default:
				j.Latest = int(i)
			}
		}
	}
}

// checkPolicy builds the selector of pol, the policy of j, and reports
// each of its errors at the field at fault (nodes, else the filter fnode,
// else the job n). It completes j.Filter with the order and direction the
// selector uses.
func (p *parser) checkPolicy(n *yaml.Node, path string, pol selector.Policy, fnode *yaml.Node, nodes map[string]*yaml.Node, j *Job) {
	fpath := join(path, "filter")
	if pol.Pattern != "" && pol.Order == "" && pol.Semver == "" && j.Latest == 0 {
		// Without latest nothing is ordered: every matching tag is synced.
		pol.Order = selector.OrderAlphabetical
		j.Filter.Order = pol.Order
	}
	sel, err := selector.New(pol)
	if err == nil {
		if j.Filter != nil {
			j.Filter.Order, j.Filter.Direction = sel.Policy().Order, sel.Policy().Direction
		}
		return
	}
	pes := selector.PolicyErrors(err)
	if len(pes) == 0 {
		p.Errorf(n, path, "%v", err)
	}
	for _, pe := range pes {
		at, field := nodes[pe.Field], join(fpath, pe.Field)
		if pe.Field == "semver" {
			field = join(path, "semver")
		}
		if pe.Field == "order" && j.Latest > 0 && at == nil {
			p.Errorf(fnode, field, "is required with latest: semver, numerical or alphabetical (how to tell the newest tags)")
			continue
		}
		if at == nil {
			if fnode != nil && p.Typo(fnode, pe.Field) {
				continue
			}
			at = fnode
		}
		if at == nil {
			at = n
		}
		p.Errorf(at, field, "%s", pe.Msg)
	}
}

// graph checks the routes of all jobs together: a target repository has
// one upstream, and no chain of jobs leads back to where it started.
func (p *parser) graph(c *Config, jobsNode *yaml.Node) {
	at := func(r Route) *yaml.Node {
		if r.Job < len(jobsNode.Content) {
			return jobsNode.Content[r.Job]
		}
		return jobsNode
	}
	routes := c.Routes()
	type feed struct {
		source string
		job    int
	}
	feeds := map[string]feed{} // target → its upstream
	for _, r := range routes {
		for _, t := range r.Targets {
			nt, ns := normRepo(t), normRepo(r.Source)
			if nt == ns {
				p.Errorf(at(r), yamlstrict.Index("jobs", r.Job), "copies %s onto itself", r.Source)
				continue
			}
			if prev, ok := feeds[nt]; ok && prev.source != ns {
				p.Errorf(at(r), join(yamlstrict.Index("jobs", r.Job), "targets"), "%s is already the target of %s in job %q (line %d): a target repository has one upstream",
					t, prev.source, c.Jobs[prev.job].Name, c.Jobs[prev.job].Line)
				continue
			}
			feeds[nt] = feed{ns, r.Job}
		}
	}
	if p.Failed() {
		return
	}
	if cyc := cycle(routes); cyc != nil {
		names := make([]string, len(cyc))
		for i, r := range cyc {
			names[i] = fmt.Sprintf("%q", c.Jobs[r.Job].Name)
		}
		chain := cyc[0].Source
		for _, r := range cyc {
			chain += " → " + next(r, cyc)
		}
		p.Errorf(at(cyc[0]), yamlstrict.Index("jobs", cyc[0].Job), "jobs %s copy in a cycle: %s", strings.Join(slices.Compact(names), ", "), chain)
	}
}

// next names the target of r that the next route of the cycle reads.
func next(r Route, cyc []Route) string {
	for _, t := range r.Targets {
		for _, o := range cyc {
			if normRepo(o.Source) == normRepo(t) {
				return t
			}
		}
	}
	return "?"
}
