package config

import (
	"errors"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/internal/yamlstrict"
	"github.com/berth-dev/berth/source/mirror"
)

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
func (p *parser) tagEndpoints(n *yaml.Node, path string, s Source, c *Config) {
	if s.File != "" || s.Ref.Digest != "" || s.Registry == "" {
		return
	}
	res, err := c.Mirrors()
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
