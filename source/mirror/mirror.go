// Package mirror decides where the device fetches a reference from: ordered
// registry mirrors, digest-only unless tags are allowed, the source last.
//
// A Set says that the registry host, or host/path prefix, Source is
// mirrored by Mirrors, which serve the same content under the same paths:
// with Source ghcr.io/acme and mirror registry.plant.local/acme, the
// reference ghcr.io/acme/web/api@sha256:… is also
// registry.plant.local/acme/web/api@sha256:…. Resolver.Endpoints lists, in
// the order to try them, the references to fetch for one reference.
//
// # The rules
//
// Matching. A set applies to a reference when its Source is the
// reference's repository or a prefix of it on a path-segment boundary:
// ghcr.io/acme matches ghcr.io/acme and ghcr.io/acme/x, not
// ghcr.io/acmecorp/x; the host ghcr.io matches every repository on ghcr.io
// and not ghcr.io:5000/x (a port makes another host). Hosts compare
// case-insensitively and index.docker.io is docker.io; references are
// normalised as Docker does (nginx is docker.io/library/nginx:latest). Only
// the longest matching Source applies: with sets for ghcr.io and for
// ghcr.io/acme, a reference under ghcr.io/acme uses the mirrors of
// ghcr.io/acme alone. No set matches: the only endpoint is the source.
//
// Composition. Several sets with the same Source compose into one list of
// mirrors in which every set's relative order is kept when that is
// possible (a stable topological merge: sets [A B] and [B C] give A B C,
// sets [B C] and [A B] give A B C), a mirror appears once, ties are broken
// by config order (the first appearance) and so are contradictory orders
// ([A B] and [B A] give A B). A mirror allows tags when any set that lists
// it for that Source has AllowTags (the explicit opt-in wins). The composed
// set falls back to the source only when every one of its sets has
// SourceFallback: the restrictive setting wins. The agent configuration
// defaults sourceFallback to true, so an entry that does not mention it
// leaves the decision to the others, and one sourceFallback: false is
// enough to keep a device of an air-gapped or firewalled site away from
// the source, whatever other entries (another file's, a generated one's)
// say about the same source.
//
// Digests. For a reference with a digest (whether or not it also has a
// tag) every mirror is an endpoint, in order, with the reference rewritten
// to the mirror (the tag kept for readability: the digest is what is
// fetched, and it is never changed); then the source itself, only when
// SourceFallback.
//
// Tags. A reference without a digest (a tag; no tag is the tag latest) is
// resolved only where tags can be trusted: on the mirrors whose set has
// AllowTags, in order, then at the source only when SourceFallback. A
// digest-only mirror never sees a tag request, because a mirror serving a
// stale tag would silently roll a device back. So the source is the last
// endpoint of every reference exactly when SourceFallback is set, digest or
// tag alike; and a tag reference whose set has no mirror allowing tags and
// SourceFallback off has no endpoint at all: Endpoints returns an empty
// list and Resolve the error ErrTagNeedsSource, rather than quietly
// reaching the source that the configuration excludes or a mirror it does
// not trust with tags. Allowing tags on a mirror does not lift the
// anti-downgrade rule of the caller: what a tag resolves to must still not
// be older than what the device runs.
package mirror

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/distribution/reference"
)

// Set lists mirrors of a registry, or of part of one. It is the agent
// configuration's registries: entry.
type Set struct {
	// Source is a registry host (with its port, if any), or host/path
	// prefix, such as ghcr.io/acme or registry.local:5000/acme.
	Source string
	// Mirrors serve the content of Source under the same paths, in the
	// order to try them; each is a host or host/path prefix.
	Mirrors []string
	// AllowTags lets the Mirrors of this set resolve tags; otherwise they
	// serve references by digest only.
	AllowTags bool
	// SourceFallback lets the source itself be tried after the mirrors.
	SourceFallback bool
}

// Endpoint is one place to fetch a reference from.
type Endpoint struct {
	// Ref is the reference to fetch, fully qualified, rewritten to the
	// mirror: host[:port]/path[:tag][@sha256:…]. A reference with no tag
	// and no digest gets the tag latest.
	Ref string
	// Mirror is the mirror prefix Ref was rewritten to (as configured,
	// the host lowercased); "" for the source registry itself.
	Mirror string
	// ByTag is true when Ref has no digest: the endpoint resolves a tag.
	ByTag bool
	// Set is the Source of the mirror set that applies to the reference
	// (normalised); "" when none does.
	Set string
}

// ErrTagNeedsSource is the reason a reference has no endpoint (see
// Resolver.Resolve).
var ErrTagNeedsSource = errors.New("tag references cannot be fetched through digest-only mirrors and source fallback is off")

// Resolver applies mirror sets to references. A nil *Resolver has no sets:
// every reference is fetched from its source. It is safe for concurrent
// use.
type Resolver struct {
	// rules has one entry per distinct source, longest source first.
	rules []rule
}

// rule is the composition of the sets of one source.
type rule struct {
	source   string // normalised
	mirrors  []mirrorEntry
	fallback bool
}

type mirrorEntry struct {
	prefix    string // normalised
	allowTags bool
}

// prefixRE matches a registry host, optional port and optional repository
// path: what a Source and a mirror may be.
var prefixRE = regexp.MustCompile(`^(?P<host>[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[a-fA-F0-9:.]+\])(?P<port>:[0-9]+)?(?P<path>/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*)?$`)

// normPrefix checks and normalises a host or host/path prefix: the host
// lowercased, index.docker.io made docker.io. The host must be one Docker
// takes for a registry host (it has a '.' or a port, or is localhost or an
// IPv6 address), otherwise a reference under it would be read as a Docker
// Hub repository.
func normPrefix(s string) (string, error) {
	m := prefixRE.FindStringSubmatch(s)
	if m == nil || len(s) > 255 {
		return "", fmt.Errorf("%q is not a registry host or host/path prefix such as ghcr.io/acme or registry.local:5000/acme (no scheme, tag, digest or trailing /; the path is lowercase)", s)
	}
	host := strings.ToLower(m[prefixRE.SubexpIndex("host")])
	port := m[prefixRE.SubexpIndex("port")]
	path := m[prefixRE.SubexpIndex("path")]
	if !strings.Contains(host, ".") && port == "" && host != "localhost" && !strings.HasPrefix(host, "[") {
		return "", fmt.Errorf("%q: the host %q has no '.' and no port: Docker would read it as a repository on docker.io (write it with its domain, or with its port)", s, host)
	}
	if host == "index.docker.io" && port == "" {
		host = "docker.io"
	}
	return host + port + path, nil
}

// New checks the sets and composes those with the same source (see the
// package documentation). A set needs a Source and at least one mirror; a
// mirror may not be its own source.
func New(sets []Set) (*Resolver, error) {
	type group struct {
		source   string
		lists    [][]string
		allow    map[string]bool
		fallback bool
	}
	var order []string
	groups := map[string]*group{}
	var errs []error
	for i, s := range sets {
		src, err := normPrefix(s.Source)
		if err != nil {
			errs = append(errs, fmt.Errorf("registries[%d].source: %w", i, err))
			continue
		}
		if len(s.Mirrors) == 0 {
			errs = append(errs, fmt.Errorf("registries[%d] (source %s): needs at least one mirror", i, s.Source))
			continue
		}
		g, ok := groups[src]
		if !ok {
			g = &group{source: src, allow: map[string]bool{}, fallback: true}
			groups[src] = g
			order = append(order, src)
		}
		var list []string
		for j, m := range s.Mirrors {
			mp, err := normPrefix(m)
			if err != nil {
				errs = append(errs, fmt.Errorf("registries[%d].mirrors[%d]: %w", i, j, err))
				continue
			}
			if mp == src {
				errs = append(errs, fmt.Errorf("registries[%d].mirrors[%d]: %q is the source itself", i, j, m))
				continue
			}
			list = append(list, mp)
			g.allow[mp] = g.allow[mp] || s.AllowTags
		}
		g.lists = append(g.lists, list)
		g.fallback = g.fallback && s.SourceFallback // the restrictive setting wins
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("registry mirrors: %w", errors.Join(errs...))
	}
	r := &Resolver{}
	for _, src := range order {
		g := groups[src]
		ru := rule{source: src, fallback: g.fallback}
		for _, m := range merge(g.lists) {
			ru.mirrors = append(ru.mirrors, mirrorEntry{prefix: m, allowTags: g.allow[m]})
		}
		r.rules = append(r.rules, ru)
	}
	// Longest source first; the order among equal lengths does not matter
	// (two distinct sources of one length cannot both match).
	sort.SliceStable(r.rules, func(i, j int) bool { return len(r.rules[i].source) > len(r.rules[j].source) })
	return r, nil
}

// merge composes ordered lists into one: every list's relative order is
// kept where possible, each item appears once, and ties and contradictions
// are settled by first appearance.
func merge(lists [][]string) []string {
	index := map[string]int{}
	var items []string
	for _, l := range lists {
		for _, m := range l {
			if _, ok := index[m]; !ok {
				index[m] = len(items)
				items = append(items, m)
			}
		}
	}
	n := len(items)
	succ := make([][]int, n)
	indeg := make([]int, n)
	edge := map[[2]int]bool{}
	for _, l := range lists {
		seen := map[string]bool{}
		prev := -1
		for _, m := range l {
			if seen[m] {
				continue // a repeat within one list keeps its first place
			}
			seen[m] = true
			cur := index[m]
			if prev >= 0 && !edge[[2]int{prev, cur}] {
				edge[[2]int{prev, cur}] = true
				succ[prev] = append(succ[prev], cur)
				indeg[cur]++
			}
			prev = cur
		}
	}
	done := make([]bool, n)
	out := make([]string, 0, n)
	for len(out) < n {
		pick := -1
		for i := 0; i < n; i++ {
			if !done[i] && indeg[i] == 0 {
				pick = i
				break
			}
		}
		if pick < 0 {
			// A cycle: the orders contradict each other. Take the first
			// item left, in config order.
			for i := 0; i < n; i++ {
				if !done[i] {
					pick = i
					break
				}
			}
		}
		done[pick] = true
		out = append(out, items[pick])
		for _, s := range succ[pick] {
			indeg[s]--
		}
	}
	return out
}

// parsed is a reference split for rewriting.
type parsed struct {
	domain string // as written, index.docker.io made docker.io
	path   string
	tag    string
	digest string
}

// repository is the normalised repository used for matching.
func (p parsed) repository() string { return strings.ToLower(p.domain) + "/" + p.path }

// suffix is ":tag@digest" as present.
func (p parsed) suffix() string {
	s := ""
	if p.tag != "" {
		s += ":" + p.tag
	}
	if p.digest != "" {
		s += "@" + p.digest
	}
	return s
}

func parse(ref string) (parsed, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return parsed{}, fmt.Errorf("image reference %q: %w", ref, err)
	}
	p := parsed{domain: reference.Domain(named), path: reference.Path(named)}
	if p.domain == "" {
		// The parser leaves the domain empty when the first component
		// looks like a host and is not a valid one (0_0.0/x).
		return parsed{}, fmt.Errorf("image reference %q: invalid registry host", ref)
	}
	if t, ok := named.(reference.Tagged); ok {
		p.tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		p.digest = d.Digest().String()
	}
	if p.tag == "" && p.digest == "" {
		p.tag = "latest"
	}
	return p, nil
}

// match returns the rule of the longest source matching repo.
func (r *Resolver) match(repo string) (*rule, bool) {
	if r == nil {
		return nil, false
	}
	for i := range r.rules {
		src := r.rules[i].source
		if repo == src || strings.HasPrefix(repo, src+"/") {
			return &r.rules[i], true
		}
	}
	return nil, false
}

// Endpoints lists where to fetch ref from, in order (see the package
// documentation): the mirrors that may serve it, rewritten, then the
// source when the matching set allows it or no set matches. ref is
// host[:port]/path[:tag][@sha256:…] or a Docker short name. The list is
// empty for a reference that cannot be parsed, and for a tag reference
// that only digest-only mirrors could serve with the source excluded;
// Resolve says why.
func (r *Resolver) Endpoints(ref string) []Endpoint {
	eps, _ := r.Resolve(ref)
	return eps
}

// Resolve is Endpoints with the reason of an empty list: the parse error of
// ref, or an error wrapping ErrTagNeedsSource that names the source prefix
// whose configuration excludes every endpoint.
func (r *Resolver) Resolve(ref string) ([]Endpoint, error) {
	p, err := parse(ref)
	if err != nil {
		return nil, err
	}
	byTag := p.digest == ""
	src := Endpoint{Ref: p.domain + "/" + p.path + p.suffix(), ByTag: byTag}
	ru, ok := r.match(p.repository())
	if !ok {
		return []Endpoint{src}, nil
	}
	rest := strings.TrimPrefix(p.repository(), ru.source) // "" or "/…"
	var out []Endpoint
	for _, m := range ru.mirrors {
		if byTag && !m.allowTags {
			continue
		}
		out = append(out, Endpoint{Ref: m.prefix + rest + p.suffix(), Mirror: m.prefix, ByTag: byTag, Set: ru.source})
	}
	if ru.fallback {
		src.Set = ru.source
		out = append(out, src)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %w (registries: source %s, mirrors %s): pin it by digest, set allowTags: true on a mirror that can be trusted with tags, or sourceFallback: true", ref, ErrTagNeedsSource, ru.source, strings.Join(ru.prefixes(), ", "))
	}
	return out, nil
}

func (ru *rule) prefixes() []string {
	out := make([]string, len(ru.mirrors))
	for i, m := range ru.mirrors {
		out[i] = m.prefix
	}
	return out
}

// Source returns the Source prefix of the set that applies to ref
// (normalised; the longest match), and false when none does or ref cannot
// be parsed.
func (r *Resolver) Source(ref string) (string, bool) {
	p, err := parse(ref)
	if err != nil {
		return "", false
	}
	ru, ok := r.match(p.repository())
	if !ok {
		return "", false
	}
	return ru.source, true
}
