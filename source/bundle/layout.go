package bundle

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/source/oci"
)

// Annotations of the layout (see the package documentation).
const (
	// AnnotationRefName is the full original reference of a top-level
	// descriptor in index.json.
	AnnotationRefName = ocispec.AnnotationRefName
	// AnnotationRole is the Role of a top-level descriptor in index.json.
	AnnotationRole = "dev.berth.bundle.role"
	// AnnotationRoot, on index.json, is the reference the bundle was made
	// from: the state's reference name.
	AnnotationRoot = "dev.berth.bundle.root"
	// AnnotationPlatforms, on index.json, lists the platforms the bundle
	// was restricted to, comma-separated; absent means all.
	AnnotationPlatforms = "dev.berth.bundle.platforms"
)

// Names of the layout's files in the tar.
const (
	layoutFile = ocispec.ImageLayoutFile // "oci-layout"
	indexFile  = "index.json"
	blobsDir   = ocispec.ImageBlobsDir // "blobs"
)

// Caps on what Open reads.
const (
	// MaxIndexSize caps index.json.
	MaxIndexSize = 4 << 20
	// MaxManifestSize caps each manifest and index (as source/oci does).
	MaxManifestSize = oci.MaxManifestSize
	// maxLayoutSize caps oci-layout.
	maxLayoutSize = 4 << 10
	// maxEntries caps the number of tar entries.
	maxEntries = 1 << 17
	// maxDepth caps how deeply indexes may nest.
	maxDepth = 8
	// maxManifestBytes caps the manifests and indexes parsed in all.
	maxManifestBytes = 256 << 20
	// maxVisits caps the steps of the walks over the graph, which visit a
	// manifest shared by several top-level items once for each.
	maxVisits = 1 << 22
)

// Role says what a top-level manifest is to the state.
type Role string

// The roles, in the order Push loads them.
const (
	RoleImage     Role = "image"
	RoleChart     Role = "chart"
	RoleState     Role = "state"
	RoleSignature Role = "signature"
)

// Roles lists every role in push order.
var Roles = []Role{RoleImage, RoleChart, RoleState, RoleSignature}

func parseRole(s string) (Role, bool) {
	for _, r := range Roles {
		if string(r) == s {
			return r, true
		}
	}
	return "", false
}

// rank orders roles for Push and listings.
func (r Role) rank() int {
	for i, x := range Roles {
		if x == r {
			return i
		}
	}
	return len(Roles)
}

// Item is one top-level manifest of the bundle, as recorded in index.json.
type Item struct {
	// Role is what it is to the state.
	Role Role `json:"role"`
	// Ref is its full original reference (host/repository:tag or
	// host/repository@sha256:…).
	Ref string `json:"ref"`
	// Repository is host/repository, Tag the tag when Ref has one.
	Repository string `json:"repository"`
	Tag        string `json:"tag,omitempty"`
	// Digest, MediaType and Size describe the manifest or index.
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Size      int64         `json:"size"`
	// Blobs and Bytes count the manifests and blobs it consists of that the
	// bundle holds, itself included (blobs shared with other items are
	// counted for each).
	Blobs int   `json:"blobs"`
	Bytes int64 `json:"bytes"`
	// Platforms lists the platforms of an index's child manifests in the
	// bundle; Excluded those left out by a platform restriction.
	Platforms []string `json:"platforms,omitempty"`
	Excluded  []string `json:"excluded,omitempty"`

	desc ocispec.Descriptor
}

// Descriptor returns the item's descriptor in index.json.
func (it Item) Descriptor() ocispec.Descriptor { return it.desc }

// parsedRef is a reference name from index.json.
type parsedRef struct {
	repo   string // host/repository
	tag    string
	digest digest.Digest
}

// parseRefName parses host/repository[:tag][@digest] as recorded in
// AnnotationRefName: a tag or a digest is required.
func parseRefName(s string) (parsedRef, error) {
	if s == "" {
		return parsedRef{}, fmt.Errorf("no %s annotation", AnnotationRefName)
	}
	if strings.Contains(s, "://") {
		return parsedRef{}, fmt.Errorf("reference %q has a scheme", s)
	}
	r, err := oci.ParseReference(s)
	if err != nil {
		return parsedRef{}, err
	}
	if r.Tag == "" && r.Digest == "" {
		return parsedRef{}, fmt.Errorf("reference %q has neither tag nor digest", s)
	}
	return parsedRef{repo: r.Repo(), tag: r.Tag, digest: digest.Digest(r.Digest)}, nil
}

// refName renders a reference name: repo:tag when there is a tag, else
// repo@digest.
func refName(repo, tag string, d digest.Digest) string {
	if tag != "" {
		return repo + ":" + tag
	}
	return repo + "@" + d.String()
}

// platformString renders an OCI platform as os/arch[/variant].
func platformString(p *ocispec.Platform) string {
	if p == nil {
		return ""
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// platformFilter matches platforms given as os/arch[/variant].
type platformFilter []ocispec.Platform

// parsePlatforms parses os/arch[/variant] strings.
func parsePlatforms(ss []string) (platformFilter, error) {
	var out platformFilter
	for _, s := range ss {
		for _, part := range strings.Split(s, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			f := strings.Split(part, "/")
			if len(f) < 2 || len(f) > 3 || f[0] == "" || f[1] == "" || (len(f) == 3 && f[2] == "") {
				return nil, fmt.Errorf("platform %q: want os/arch[/variant], such as linux/arm64", part)
			}
			p := ocispec.Platform{OS: strings.ToLower(f[0]), Architecture: strings.ToLower(f[1])}
			if len(f) == 3 {
				p.Variant = strings.ToLower(f[2])
			}
			out = append(out, p)
		}
	}
	return out, nil
}

func (f platformFilter) String() string {
	s := make([]string, len(f))
	for i := range f {
		s[i] = platformString(&f[i])
	}
	return strings.Join(s, ",")
}

// match reports whether a child manifest's platform is wanted. A filter
// without a variant matches every variant; arm64's variant v8 is its
// default.
func (f platformFilter) match(p *ocispec.Platform) bool {
	if p == nil {
		return false
	}
	norm := func(arch, variant string) string {
		if arch == "arm64" && variant == "v8" {
			return ""
		}
		return variant
	}
	for _, w := range f {
		if !strings.EqualFold(w.OS, p.OS) || !strings.EqualFold(w.Architecture, p.Architecture) {
			continue
		}
		if w.Variant == "" || norm(w.Architecture, w.Variant) == norm(p.Architecture, strings.ToLower(p.Variant)) {
			return true
		}
	}
	return false
}
