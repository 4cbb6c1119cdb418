package lock

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/distribution/reference"
)

var (
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
	// Parse exactly as Docker does: nginx is docker.io/library/nginx.
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		if _, lerr := reference.ParseNormalizedNamed(strings.ToLower(s)); lerr == nil {
			return imageRef{}, errors.New("is not a valid reference: the repository must be lowercase")
		}
		return imageRef{}, errors.New("is not a valid reference: write [registry/]repository[:tag][@sha256:digest]")
	}
	r := imageRef{repository: reference.Domain(named) + "/" + reference.Path(named)}
	if len(r.repository) > 255 {
		return imageRef{}, errors.New("is not a valid reference: the name is longer than 255 characters")
	}
	if t, ok := named.(reference.Tagged); ok {
		r.tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		r.digest = d.Digest().String()
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
