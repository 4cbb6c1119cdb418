package spec

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Media types of the desired-state API.
const (
	// ManifestMediaType is the Accept and Content-Type of the State
	// Manifest.
	ManifestMediaType = "application/vnd.margo.manifest.v1+json"
	// BundleMediaType is the media type of the bundle of all the
	// ApplicationDeployment YAMLs of a manifest.
	BundleMediaType = "application/vnd.margo.bundle.v1+tar+gzip"
	// DeploymentMediaType is the Content-Type of one ApplicationDeployment.
	DeploymentMediaType = "application/yaml"
	// ProblemMediaType is the Content-Type of error bodies (RFC 9457).
	ProblemMediaType = "application/problem+json"
)

// MaxManifestSize caps the State Manifest body.
const MaxManifestSize = 4 << 20

var (
	// digestRE is the only digest form the spec allows.
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	// uuidRE is a deployment id.
	uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	// extensionRE is an extension key, allowed (and ignored) where the
	// spec allows them.
	extensionRE = regexp.MustCompile(`^x-[a-z][a-z0-9-]*-extensions$`)
)

// IsExtensionKey reports whether k is an x-<name>-extensions key.
func IsExtensionKey(k string) bool { return extensionRE.MatchString(k) }

// ValidDigest reports whether d is a digest of the form the spec requires:
// sha256: and 64 lowercase hex digits.
func ValidDigest(d string) bool { return digestRE.MatchString(d) }

// ValidDeploymentID reports whether id is a UUID, the form of deployment
// ids.
func ValidDeploymentID(id string) bool { return uuidRE.MatchString(id) }

// Manifest is a State Manifest: the deployments a WFM assigns to the client
// and the bundle holding all of them.
type Manifest struct {
	// ManifestVersion is at least 1 and strictly greater for every new
	// manifest of a client.
	ManifestVersion uint64 `json:"manifestVersion"`
	// Bundle is nil exactly when Deployments is empty.
	Bundle *BundleRef `json:"bundle"`
	// Deployments are in the order the WFM lists them, ids unique.
	Deployments []DeploymentRef `json:"deployments"`
}

// BundleRef is where the bundle of a manifest is.
type BundleRef struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	// SizeBytes is advisory (0: not given); never used for integrity.
	SizeBytes uint64 `json:"sizeBytes,omitempty"`
	URL       string `json:"url"`
}

// DeploymentRef is one ApplicationDeployment of a manifest.
type DeploymentRef struct {
	DeploymentID string `json:"deploymentId"`
	Digest       string `json:"digest"`
	// SizeBytes is advisory (0: not given).
	SizeBytes uint64 `json:"sizeBytes,omitempty"`
	URL       string `json:"url"`
}

// Deployment returns the entry of the deployment id, if listed.
func (m *Manifest) Deployment(id string) (DeploymentRef, bool) {
	for _, d := range m.Deployments {
		if d.DeploymentID == id {
			return d, true
		}
	}
	return DeploymentRef{}, false
}

// ParseManifest parses and validates a State Manifest body (at most
// MaxManifestSize bytes: the caller caps the read).
//
// Rules: one JSON object, no duplicate keys; manifestVersion an integer
// from 1 to 2^64-1; bundle present, null exactly when deployments is
// empty, with mediaType BundleMediaType; every digest sha256 and 64
// lowercase hex digits (another algorithm makes the manifest invalid);
// deployment ids UUIDs and unique; urls relative references without
// scheme or host (an absolute URL would send the device to another
// server), without "..", query or fragment. Unknown fields are refused,
// x-<name>-extensions keys ignored.
func ParseManifest(data []byte) (*Manifest, error) {
	if len(data) > MaxManifestSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidManifest, MaxManifestSize)
	}
	v, err := decodeJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidManifest, err)
	}
	p := &problems{}
	o := object(p, "", v)
	if o == nil {
		return nil, p.err(ErrInvalidManifest, ErrInvalidManifest.Error())
	}
	m := &Manifest{}
	if mv, ok := o.uint64("manifestVersion", true); ok {
		if mv == 0 {
			p.add("manifestVersion", "must be at least 1")
		}
		m.ManifestVersion = mv
	}
	bv, hasBundle := o.get("bundle", true)
	if hasBundle && bv != nil {
		m.Bundle = parseBundleRef(p, bv)
	}
	if dv, ok := o.get("deployments", true); ok {
		m.Deployments = parseDeploymentRefs(p, dv)
	}
	o.strict()
	if _, ok := o.m["deployments"].([]any); ok && hasBundle && !p.failed() {
		switch {
		case len(m.Deployments) == 0 && m.Bundle != nil:
			p.add("bundle", "must be null when deployments is empty")
		case len(m.Deployments) > 0 && m.Bundle == nil:
			p.add("bundle", "must not be null when deployments lists %d deployments", len(m.Deployments))
		}
	}
	if p.failed() {
		return nil, p.err(ErrInvalidManifest, ErrInvalidManifest.Error())
	}
	return m, nil
}

func parseBundleRef(p *problems, v any) *BundleRef {
	o := object(p, "bundle", v)
	if o == nil {
		return nil
	}
	b := &BundleRef{}
	if mt, ok := o.str("mediaType", true); ok {
		if mt != BundleMediaType {
			p.add("bundle.mediaType", "must be %q, got %q", BundleMediaType, mt)
		}
		b.MediaType = mt
	}
	b.Digest = digestField(o, "digest")
	b.SizeBytes, _ = o.uint64("sizeBytes", false)
	b.URL = urlField(o, "url")
	o.strict()
	return b
}

func parseDeploymentRefs(p *problems, v any) []DeploymentRef {
	list, ok := v.([]any)
	if !ok {
		p.add("deployments", "must be an array, got %s", describe(v))
		return nil
	}
	out := make([]DeploymentRef, 0, len(list))
	ids := map[string]int{}
	for i, item := range list {
		path := index("deployments", i)
		o := object(p, path, item)
		if o == nil {
			continue
		}
		d := DeploymentRef{}
		if id, ok := o.str("deploymentId", true); ok {
			if !uuidRE.MatchString(id) {
				p.add(join(path, "deploymentId"), "must be a UUID, got %q", truncate(id))
			} else if first, dup := ids[strings.ToLower(id)]; dup {
				p.add(join(path, "deploymentId"), "%q is listed twice (first at deployments[%d])", id, first)
			} else {
				ids[strings.ToLower(id)] = i
			}
			d.DeploymentID = id
		}
		d.Digest = digestField(o, "digest")
		d.SizeBytes, _ = o.uint64("sizeBytes", false)
		d.URL = urlField(o, "url")
		o.strict()
		out = append(out, d)
	}
	return out
}

// digestField returns the digest member name, validated.
func digestField(o *obj, name string) string {
	d, ok := o.str(name, true)
	if !ok {
		return ""
	}
	if !digestRE.MatchString(d) {
		if alg, _, found := strings.Cut(d, ":"); found && alg != "sha256" {
			o.p.add(join(o.path, name), "unsupported digest algorithm %q: the spec allows sha256 only", truncate(alg))
		} else {
			o.p.add(join(o.path, name), "must be sha256: followed by 64 lowercase hex digits, got %q", truncate(d))
		}
	}
	return d
}

// urlField returns the url member name, a relative reference resolved
// later against the WFM's base URL.
func urlField(o *obj, name string) string {
	s, ok := o.str(name, true)
	if !ok {
		return ""
	}
	if err := checkContentURL(s); err != nil {
		o.p.add(join(o.path, name), "%v", err)
	}
	return s
}

// checkContentURL checks a content url of a manifest: a path-absolute
// reference ("/api/v1/..."), without scheme, host, query, fragment or dot
// segments.
func checkContentURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("invalid URL %q", truncate(s))
	case u.Scheme != "" || u.Host != "" || u.User != nil || strings.HasPrefix(s, "//"):
		return fmt.Errorf("must be a path on the WFM such as /api/v1/bundles/sha256:…, not an absolute URL (got %q)", truncate(s))
	case !strings.HasPrefix(u.Path, "/"):
		return fmt.Errorf("must start with /, got %q", truncate(s))
	case u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(s, "?#\\"):
		return fmt.Errorf("must not carry a query or fragment, got %q", truncate(s))
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if seg == "." || seg == ".." {
			return fmt.Errorf("must not have . or .. segments, got %q", truncate(s))
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
