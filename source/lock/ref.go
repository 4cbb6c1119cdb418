package lock

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// The grammar of image references, as Docker parses them
// (github.com/distribution/reference).
var (
	refRE = func() *regexp.Regexp {
		alnum := `[a-z0-9]+`
		sep := `(?:[._]|__|[-]+)`
		pathComp := alnum + `(?:` + sep + alnum + `)*`
		domainComp := `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
		host := `(?:` + domainComp + `(?:\.` + domainComp + `)*|\[[a-fA-F0-9:]+\])`
		domain := host + `(?::[0-9]+)?`
		tag := `[\w][\w.-]{0,127}`
		digest := `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}`
		return regexp.MustCompile(`^(` + domain + `)/(` + pathComp + `(?:/` + pathComp + `)*)(?::(` + tag + `))?(?:@(` + digest + `))?$`)
	}()
	hex64RE  = regexp.MustCompile(`^[a-f0-9]{64}$`)
	sha256RE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// imageRef is a parsed image reference.
type imageRef struct {
	// repository is fully qualified, Docker Hub normalised as Docker does:
	// nginx is docker.io/library/nginx.
	repository string
	// tag is the tag as written, empty when none is.
	tag string
	// digest is the digest as written, empty when none is.
	digest string
}

// resolvable returns the reference given to a Resolver: the repository and
// the tag, latest when none is written.
func (r imageRef) resolvable() string {
	tag := r.tag
	if tag == "" {
		tag = "latest"
	}
	return r.repository + ":" + tag
}

// errInterpolated is returned for an image that uses Compose's variables.
var errInterpolated = errors.New("uses variable interpolation, which lock cannot pin: write the reference out literally")

// parseImage parses an image reference the way Docker does. A digest, when
// present, must be sha256.
func parseImage(s string) (imageRef, error) {
	if strings.Contains(s, "$") {
		return imageRef{}, errInterpolated
	}
	if s == "" {
		return imageRef{}, errors.New("is empty")
	}
	if hex64RE.MatchString(s) {
		return imageRef{}, errors.New("is an image ID, not a reference: write repository:tag")
	}
	// Split the domain as Docker does: the first component is a registry
	// when it looks like a host, otherwise the name is on Docker Hub.
	domain, rest := "docker.io", s
	if i := strings.IndexByte(s, '/'); i >= 0 {
		first := s[:i]
		if strings.ContainsAny(first, ".:") || first == "localhost" || strings.ToLower(first) != first {
			domain, rest = first, s[i+1:]
		}
	}
	if domain == "index.docker.io" {
		domain = "docker.io"
	}
	name := rest
	if i := strings.IndexAny(name, ":@"); i >= 0 {
		name = name[:i]
	}
	if strings.ToLower(name) != name {
		return imageRef{}, fmt.Errorf("is not a valid reference: the repository %q must be lowercase", name)
	}
	if domain == "docker.io" && !strings.Contains(name, "/") {
		rest = "library/" + rest
	}
	m := refRE.FindStringSubmatch(domain + "/" + rest)
	if m == nil {
		return imageRef{}, errors.New("is not a valid reference: write [registry/]repository[:tag][@sha256:digest]")
	}
	r := imageRef{repository: m[1] + "/" + m[2], tag: m[3], digest: m[4]}
	if len(r.repository) > 255 {
		return imageRef{}, errors.New("is not a valid reference: the name is longer than 255 characters")
	}
	if r.digest != "" && !sha256RE.MatchString(r.digest) {
		return imageRef{}, fmt.Errorf("has digest %q: only sha256: followed by 64 lowercase hex digits is supported", r.digest)
	}
	return r, nil
}

// withTag returns the reference s as written with the tag latest added
// when it has none. s must have no digest.
func withTag(s string, r imageRef) string {
	if r.tag == "" {
		return s + ":latest"
	}
	return s
}
