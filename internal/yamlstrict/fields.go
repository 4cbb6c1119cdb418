package yamlstrict

import (
	"net"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// StrField returns the string field name of the mapping f at path, its
// value node, and whether it is set and a string (a value of another kind
// is recorded as an error).
func (p *Parser) StrField(f map[string]Field, path, name string) (*yaml.Node, string, bool) {
	fv, ok := f[name]
	if !ok {
		return nil, "", false
	}
	s, ok := p.Str(fv.Val, Join(path, name))
	return fv.Val, s, ok
}

// ListField returns the items of the list field name of the mapping f at
// path; nil when it is absent, null or not a list (recorded as an error).
func (p *Parser) ListField(f map[string]Field, path, name string) []*yaml.Node {
	fv, ok := f[name]
	if !ok || IsNull(fv.Val) || !p.Kind(fv.Val, Join(path, name), yaml.SequenceNode) {
		return nil
	}
	return fv.Val.Content
}

// HostPort checks the host and port of a registry address written at n:
// a bracketed host must be an IPv6 address, a port a number from 1 to
// 65535. It records what is wrong and reports whether both are valid.
func (p *Parser) HostPort(n *yaml.Node, path, host, port string) bool {
	if strings.HasPrefix(host, "[") && net.ParseIP(strings.Trim(host, "[]")) == nil {
		p.Errorf(n, path, "%s is not an IPv6 address", host)
		return false
	}
	if port != "" {
		if pn, err := strconv.Atoi(port); err != nil || pn < 1 || pn > 65535 {
			p.Errorf(n, path, "port must be a number from 1 to 65535, got %q", port)
			return false
		}
	}
	return true
}
