package oci

import (
	"fmt"
	"strings"

	"oras.land/oras-go/v2/registry"
)

// Scheme is the URL scheme of berth references.
const Scheme = "oci://"

// Reference names a repository in a registry and, optionally, a tag and/or a
// digest: oci://HOST/REPO[:TAG][@sha256:HEX]. The oci:// prefix is optional.
type Reference struct {
	Registry   string
	Repository string
	Tag        string
	Digest     string
}

// ParseReference parses oci://HOST/REPO[:TAG][@DIGEST]. A reference with
// neither tag nor digest is valid: it names a repository.
func ParseReference(s string) (Reference, error) {
	raw := strings.TrimPrefix(s, Scheme)
	if strings.Contains(raw, "://") {
		return Reference{}, fmt.Errorf("%w %q: only the oci:// scheme is supported", ErrInvalidReference, s)
	}
	var tag, dgst string
	if i := strings.Index(raw, "@"); i >= 0 {
		raw, dgst = raw[:i], raw[i+1:]
	}
	if i := strings.LastIndex(raw, ":"); i > strings.LastIndex(raw, "/") {
		raw, tag = raw[:i], raw[i+1:]
	}
	ref := raw
	switch {
	case dgst != "":
		ref += "@" + dgst
	case tag != "":
		ref += ":" + tag
	}
	r, err := registry.ParseReference(ref)
	if err != nil {
		return Reference{}, fmt.Errorf("%w %q: %v (expected oci://HOST/REPO:TAG or oci://HOST/REPO@sha256:...)", ErrInvalidReference, s, err)
	}
	out := Reference{Registry: r.Registry, Repository: r.Repository}
	if tag != "" {
		if err := (registry.Reference{Registry: r.Registry, Repository: r.Repository, Reference: tag}).ValidateReferenceAsTag(); err != nil {
			return Reference{}, fmt.Errorf("%w %q: bad tag %q", ErrInvalidReference, s, tag)
		}
		out.Tag = tag
	}
	if dgst != "" {
		if _, err := r.Digest(); err != nil {
			return Reference{}, fmt.Errorf("%w %q: bad digest %q", ErrInvalidReference, s, dgst)
		}
		out.Digest = dgst
	}
	return out, nil
}

// Repo returns HOST/REPO.
func (r Reference) Repo() string { return r.Registry + "/" + r.Repository }

// WithDigest returns r pinned to digest d (the tag is kept for display).
func (r Reference) WithDigest(d string) Reference { r.Digest = d; return r }

// WithTag returns r with tag t and no digest.
func (r Reference) WithTag(t string) Reference { r.Tag, r.Digest = t, ""; return r }

// ref returns the tag or digest oras-go addresses a manifest by; the digest
// wins when both are set.
func (r Reference) ref() string {
	if r.Digest != "" {
		return r.Digest
	}
	return r.Tag
}

// String returns the oci:// form.
func (r Reference) String() string {
	s := Scheme + r.Repo()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}
