package config

import (
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/internal/yamlstrict"
	"github.com/berth-dev/berth/source/selector"
)

// source parses one entry of sources.
func (p *parser) source(n *yaml.Node, path string) *Source {
	f := p.Mapping(n, path, "name", "url", "ref", "filter", "layerSelector", "interval", "timeout", "reconcileTimeout", "jitter", "suspend",
		"verify", "insecureSkipVerify", "credentials", "caFile", "insecure", "limits", "windows")
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
	p.sourceTiming(f, path, s)
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
	p.limits(f, path, &s.Limits)
	return s
}

// sourceTiming parses the interval, timeout, reconcileTimeout (default
// ReconcileTimeoutFactor × the timeout, at least the timeout) and jitter
// of a source.
func (p *parser) sourceTiming(f fields, path string, s *Source) {
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
	s.ReconcileTimeout = ReconcileTimeoutFactor * s.Timeout
	if fv, ok := f["reconcileTimeout"]; ok {
		if d, ok := p.Duration(fv.Val, join(path, "reconcileTimeout"), MinTimeout); ok {
			if d < s.Timeout {
				p.Errorf(fv.Val, join(path, "reconcileTimeout"), "must be at least the timeout of one call (%s), got %s", s.Timeout, d)
			} else {
				s.ReconcileTimeout = d
			}
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
