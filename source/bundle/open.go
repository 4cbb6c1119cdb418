package bundle

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types berth reads as manifests and indexes.
const (
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeArtifact       = "application/vnd.oci.artifact.manifest.v1+json"
	mediaTypeDockerForeign  = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
)

// Bundle is an open bundle. Its methods are safe for concurrent use.
type Bundle struct {
	path      string
	f         *os.File
	tar       *tarIndex
	root      string
	rootDesc  ocispec.Descriptor
	platforms platformFilter
	items     []Item
	nodes     map[digest.Digest]*node
	repos     map[string]*repo

	visits, parsed int64 // spent on opening, against maxVisits and maxManifestBytes
}

// node is a manifest, an index or a plain blob of the bundle's graph.
type node struct {
	desc     ocispec.Descriptor // media type, digest and size
	manifest bool               // a manifest or an index (read and parsed)
	index    bool
	children []ocispec.Descriptor // present children: config, layers or manifests
	excluded []ocispec.Descriptor // children left out (platforms, foreign layers)
	config   digest.Digest        // a manifest's config
	subject  *ocispec.Descriptor
	artifact string            // artifactType, else the config media type
	annot    map[string]string // manifest annotations
	owner    string            // what referenced it first, for messages
}

// repo is what the bundle holds under one original repository.
type repo struct {
	tags    map[string]digest.Digest
	members map[digest.Digest]bool            // every manifest and blob reachable from its items
	refs    map[digest.Digest][]digest.Digest // subject → referrer manifests
}

// manifestJSON holds the fields of manifests and indexes berth follows.
type manifestJSON struct {
	SchemaVersion int                  `json:"schemaVersion"`
	MediaType     string               `json:"mediaType"`
	ArtifactType  string               `json:"artifactType"`
	Config        *ocispec.Descriptor  `json:"config"`
	Layers        []ocispec.Descriptor `json:"layers"`
	Blobs         []ocispec.Descriptor `json:"blobs"`
	Manifests     []ocispec.Descriptor `json:"manifests"`
	Subject       *ocispec.Descriptor  `json:"subject"`
	Annotations   map[string]string    `json:"annotations"`
}

// isIndexType and isManifestType classify media types.
func isIndexType(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == mediaTypeDockerList
}
func isManifestType(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == mediaTypeDockerManifest || mt == mediaTypeArtifact
}

// isNondistributable reports layers registries do not copy.
func isNondistributable(mt string) bool {
	return mt == mediaTypeDockerForeign || strings.HasPrefix(mt, "application/vnd.oci.image.layer.nondistributable.")
}

// parseManifest decodes raw as the manifest or index desc describes and
// checks it: schema version 2, media type consistent with desc, valid
// child descriptors.
func parseManifest(desc ocispec.Descriptor, raw []byte) (*manifestJSON, bool, error) {
	var m manifestJSON
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, false, fmt.Errorf("decode: %v", err)
	}
	mt := desc.MediaType
	if mt == "" {
		mt = m.MediaType
	}
	if m.MediaType != "" && desc.MediaType != "" && m.MediaType != desc.MediaType {
		return nil, false, fmt.Errorf("its media type %q differs from its descriptor's %q", m.MediaType, desc.MediaType)
	}
	var index bool
	switch {
	case isIndexType(mt):
		index = true
	case isManifestType(mt):
	case mt == "" && m.Manifests != nil && m.Config == nil && m.Layers == nil:
		index = true
	case mt == "" && (m.Config != nil || m.Layers != nil):
	default:
		return nil, false, fmt.Errorf("media type %q is not an image manifest or index", mt)
	}
	if mt != mediaTypeArtifact && m.SchemaVersion != 2 {
		return nil, false, fmt.Errorf("schema version %d (want 2)", m.SchemaVersion)
	}
	if index && (m.Config != nil || len(m.Layers) > 0) || !index && len(m.Manifests) > 0 {
		return nil, false, fmt.Errorf("mixes index and manifest fields")
	}
	if !index && m.Config == nil && mt != mediaTypeArtifact {
		return nil, false, fmt.Errorf("image manifest without config")
	}
	check := func(what string, ds ...ocispec.Descriptor) error {
		for _, d := range ds {
			if err := d.Digest.Validate(); err != nil {
				return fmt.Errorf("%s descriptor: digest %q: %v", what, d.Digest, err)
			}
			if d.Size < 0 {
				return fmt.Errorf("%s descriptor %s: negative size", what, d.Digest)
			}
		}
		return nil
	}
	if m.Config != nil {
		if err := check("config", *m.Config); err != nil {
			return nil, false, err
		}
	}
	if m.Subject != nil {
		if err := check("subject", *m.Subject); err != nil {
			return nil, false, err
		}
	}
	if err := check("layer", m.Layers...); err != nil {
		return nil, false, err
	}
	if err := check("blob", m.Blobs...); err != nil {
		return nil, false, err
	}
	if err := check("manifest", m.Manifests...); err != nil {
		return nil, false, err
	}
	return &m, index, nil
}

// Open opens a bundle (an OCI image layout in a tar file) for reading,
// checking its index: the tar's entries, oci-layout, index.json, every
// manifest and index (digest-checked) and that every blob they need is
// present with the right size. Layers are digest-checked when they are
// read (Transport, Push) or by Verify. Close releases the file.
func Open(ctx context.Context, path string) (*Bundle, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open bundle: %w", err)
	}
	b, err := open(ctx, f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open bundle %s: %w", path, err)
	}
	b.path = path
	return b, nil
}

// open reads the bundle in f, in steps: index the tar, read oci-layout
// and index.json (readIndex), add each manifest the index lists with
// everything under it (addManifest), check that exactly one is the state,
// then link the referrers of each repository and sort the items.
func open(ctx context.Context, f *os.File) (*Bundle, error) {
	ti, err := indexTar(f)
	if err != nil {
		return nil, err
	}
	b := &Bundle{f: f, tar: ti, nodes: map[digest.Digest]*node{}, repos: map[string]*repo{}}
	index, err := b.readIndex()
	if err != nil {
		return nil, err
	}

	seenRef := map[string]bool{}
	states := 0
	for i, d := range index.Manifests {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		role, err := b.addManifest(ctx, i, d, seenRef)
		if err != nil {
			return nil, err
		}
		if role == RoleState {
			states++
		}
	}
	if states != 1 {
		return nil, fmt.Errorf("%w: %s holds %d state manifests (want 1)", ErrInvalidBundle, indexFile, states)
	}
	b.linkReferrers()
	b.sortItems()
	return b, nil
}

// readIndex reads and checks oci-layout and index.json, and sets the
// bundle's platforms and root from the index's annotations.
func (b *Bundle) readIndex() (*ocispec.Index, error) {
	ti := b.tar
	var layout ocispec.ImageLayout
	if err := b.readJSON(*ti.layout, maxLayoutSize, layoutFile, &layout); err != nil {
		return nil, err
	}
	if layout.Version != ocispec.ImageLayoutVersion {
		return nil, fmt.Errorf("%w: %s: image layout version %q (want %s)", ErrInvalidBundle, layoutFile, layout.Version, ocispec.ImageLayoutVersion)
	}
	var index ocispec.Index
	if err := b.readJSON(*ti.index, MaxIndexSize, indexFile, &index); err != nil {
		return nil, err
	}
	if index.SchemaVersion != 2 || (index.MediaType != "" && index.MediaType != ocispec.MediaTypeImageIndex) {
		return nil, fmt.Errorf("%w: %s: not an OCI image index (schema version %d, media type %q)", ErrInvalidBundle, indexFile, index.SchemaVersion, index.MediaType)
	}
	if p := index.Annotations[AnnotationPlatforms]; p != "" {
		var err error
		if b.platforms, err = parsePlatforms([]string{p}); err != nil {
			return nil, fmt.Errorf("%w: %s annotation %s: %v", ErrInvalidBundle, indexFile, AnnotationPlatforms, err)
		}
	}
	b.root = index.Annotations[AnnotationRoot]
	if b.root == "" {
		return nil, fmt.Errorf("%w: %s has no %s annotation: not a berth bundle", ErrInvalidBundle, indexFile, AnnotationRoot)
	}
	if len(index.Manifests) == 0 {
		return nil, fmt.Errorf("%w: %s lists nothing", ErrInvalidBundle, indexFile)
	}
	return &index, nil
}

// addManifest checks the i-th manifest d of index.json (its digest,
// reference, role, and that no reference is listed twice, in seenRef),
// walks everything under it, and adds it to the bundle's items. It
// returns its role.
func (b *Bundle) addManifest(ctx context.Context, i int, d ocispec.Descriptor, seenRef map[string]bool) (Role, error) {
	where := fmt.Sprintf("%s manifests[%d]", indexFile, i)
	if err := d.Digest.Validate(); err != nil {
		return "", fmt.Errorf("%w: %s: digest %q: %v", ErrInvalidBundle, where, d.Digest, err)
	}
	ref, err := parseRefName(d.Annotations[AnnotationRefName])
	if err != nil {
		return "", fmt.Errorf("%w: %s (%s): %v", ErrInvalidBundle, where, d.Digest, err)
	}
	refStr := d.Annotations[AnnotationRefName]
	if ref.digest != "" && ref.digest != d.Digest {
		return "", fmt.Errorf("%w: %s: reference %s names another digest than %s", ErrInvalidBundle, where, refStr, d.Digest)
	}
	role, ok := parseRole(d.Annotations[AnnotationRole])
	if !ok {
		return "", fmt.Errorf("%w: %s (%s): role %q (want state, signature, chart or image)", ErrInvalidBundle, where, refStr, d.Annotations[AnnotationRole])
	}
	if seenRef[refStr] {
		return "", fmt.Errorf("%w: %s: reference %s is listed twice", ErrInvalidBundle, where, refStr)
	}
	seenRef[refStr] = true
	if role == RoleState {
		if refStr != b.root {
			return "", fmt.Errorf("%w: %s: the state %s is not the root %s", ErrInvalidBundle, where, refStr, b.root)
		}
		b.rootDesc = d
	}
	it := Item{Role: role, Ref: refStr, Repository: ref.repo, Tag: ref.tag, Digest: d.Digest, MediaType: d.MediaType, Size: d.Size, desc: d}
	rp := b.repo(ref.repo)
	if ref.tag != "" {
		if prev, ok := rp.tags[ref.tag]; ok && prev != d.Digest {
			return "", fmt.Errorf("%w: %s: tag %s names two digests", ErrInvalidBundle, where, refStr)
		}
		rp.tags[ref.tag] = d.Digest
	}
	owner := string(role) + " " + refStr
	if err := b.walk(ctx, d, true, owner, 0, &visit{rp: rp, it: &it, seen: map[digest.Digest]bool{}}); err != nil {
		return "", err
	}
	if it.MediaType == "" { // the descriptor left it out: the manifest's
		it.MediaType = b.nodes[d.Digest].desc.MediaType
		it.desc.MediaType = it.MediaType
		if role == RoleState {
			b.rootDesc.MediaType = it.MediaType
		}
	}
	b.items = append(b.items, it)
	return role, nil
}

// linkReferrers lists, in each repository, the manifests whose subject is
// each digest, sorted.
func (b *Bundle) linkReferrers() {
	for _, rp := range b.repos {
		for d := range rp.members {
			n := b.nodes[d]
			if n.subject != nil {
				rp.refs[n.subject.Digest] = append(rp.refs[n.subject.Digest], d)
			}
		}
		for _, l := range rp.refs {
			slices.Sort(l)
		}
	}
}

// sortItems sorts the items by role, in push order (see Roles), then by
// reference.
func (b *Bundle) sortItems() {
	sort.SliceStable(b.items, func(i, j int) bool {
		if a, c := b.items[i].Role.rank(), b.items[j].Role.rank(); a != c {
			return a < c
		}
		return b.items[i].Ref < b.items[j].Ref
	})
}

func (b *Bundle) repo(name string) *repo {
	rp := b.repos[name]
	if rp == nil {
		rp = &repo{tags: map[string]digest.Digest{}, members: map[digest.Digest]bool{}, refs: map[digest.Digest][]digest.Digest{}}
		b.repos[name] = rp
	}
	return rp
}

// visit is one item's walk over the graph.
type visit struct {
	rp   *repo
	it   *Item
	seen map[digest.Digest]bool
}

// walk adds desc and what it references to the graph, to the item's
// repository and to the item's counts. manifest says desc is a manifest or
// an index (top-level, or a child of an index) rather than a plain blob;
// owner says what it is, for messages.
func (b *Bundle) walk(ctx context.Context, desc ocispec.Descriptor, manifest bool, owner string, depth int, v *visit) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if depth > maxDepth {
		return fmt.Errorf("%w: %s: indexes nest more than %d deep", ErrInvalidBundle, owner, maxDepth)
	}
	e, ok := b.tar.blobs[desc.Digest]
	if !ok {
		return fmt.Errorf("%w: blob %s (%s) is missing", ErrInvalidBundle, desc.Digest, owner)
	}
	if e.size != desc.Size {
		return fmt.Errorf("%w: blob %s (%s) is %d bytes, its descriptor says %d", ErrInvalidBundle, desc.Digest, owner, e.size, desc.Size)
	}
	if v.seen[desc.Digest] {
		return nil
	}
	if b.visits++; b.visits > maxVisits {
		return fmt.Errorf("%w: the index references more than %d manifests and blobs in all", ErrInvalidBundle, maxVisits)
	}
	v.seen[desc.Digest] = true
	v.rp.members[desc.Digest] = true
	v.it.Blobs++
	v.it.Bytes += desc.Size
	n := b.nodes[desc.Digest]
	if n == nil {
		n = &node{desc: ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}, owner: owner}
		b.nodes[desc.Digest] = n
	}
	if !manifest {
		return nil
	}
	if !n.manifest {
		if err := b.parseNode(n); err != nil {
			return err
		}
	}
	for _, c := range n.children {
		what := "layer"
		switch {
		case n.index:
			what = strings.TrimSpace("manifest " + platformString(c.Platform))
		case c.Digest == n.config:
			what = "config"
		}
		if err := b.walk(ctx, c, n.index, what+" of "+owner, depth+1, v); err != nil {
			return err
		}
	}
	if depth == 0 && n.index {
		for _, c := range n.children {
			if p := platformString(c.Platform); p != "" {
				v.it.Platforms = append(v.it.Platforms, p)
			}
		}
		for _, c := range n.excluded {
			if p := platformString(c.Platform); p != "" {
				v.it.Excluded = append(v.it.Excluded, p)
			}
		}
	}
	return nil
}

// parseNode reads (digest-checked) and parses a manifest or index.
func (b *Bundle) parseNode(n *node) error {
	if n.desc.Size > MaxManifestSize {
		return fmt.Errorf("%w: manifest %s (%s) is %d bytes (cap %d)", ErrTooLarge, n.desc.Digest, n.owner, n.desc.Size, MaxManifestSize)
	}
	if b.parsed += n.desc.Size; b.parsed > maxManifestBytes {
		return fmt.Errorf("%w: the manifests exceed %d bytes in all", ErrTooLarge, maxManifestBytes)
	}
	raw, err := b.readBlob(n.desc.Digest)
	if err != nil {
		return err
	}
	m, index, err := parseManifest(n.desc, raw)
	if err != nil {
		return fmt.Errorf("%w: manifest %s (%s): %v", ErrInvalidBundle, n.desc.Digest, n.owner, err)
	}
	n.manifest, n.index = true, index
	if n.desc.MediaType == "" {
		n.desc.MediaType = m.MediaType
	}
	if n.desc.MediaType == "" {
		n.desc.MediaType = ocispec.MediaTypeImageManifest
		if index {
			n.desc.MediaType = ocispec.MediaTypeImageIndex
		}
	}
	n.subject, n.annot = m.Subject, m.Annotations
	n.artifact = m.ArtifactType
	var kids []ocispec.Descriptor
	switch {
	case index:
		kids = m.Manifests
	default:
		if m.Config != nil {
			n.config = m.Config.Digest
			if n.artifact == "" {
				n.artifact = m.Config.MediaType
			}
			kids = append(kids, *m.Config)
		}
		kids = append(kids, m.Layers...)
		kids = append(kids, m.Blobs...)
	}
	for _, c := range kids {
		_, present := b.tar.blobs[c.Digest]
		switch {
		case !present && isNondistributable(c.MediaType):
			n.excluded = append(n.excluded, c)
		case !present && index && len(b.platforms) > 0 && !isIndexType(c.MediaType) && !b.platforms.match(c.Platform):
			n.excluded = append(n.excluded, c)
		default:
			n.children = append(n.children, c)
		}
	}
	return nil
}

// readJSON decodes a small file of the layout.
func (b *Bundle) readJSON(e entry, max int64, name string, v any) error {
	if e.size > max {
		return fmt.Errorf("%w: %s is %d bytes (cap %d)", ErrTooLarge, name, e.size, max)
	}
	raw := make([]byte, e.size)
	if _, err := b.f.ReadAt(raw, e.off); err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidBundle, name, err)
	}
	return nil
}

// readBlob reads a small blob whole, checking its digest.
func (b *Bundle) readBlob(d digest.Digest) ([]byte, error) {
	rc, err := b.openBlob(d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	raw := make([]byte, 0, b.tar.blobs[d].size)
	buf := make([]byte, 32<<10)
	for {
		n, err := rc.Read(buf)
		raw = append(raw, buf[:n]...)
		if err == io.EOF {
			return raw, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// openBlob streams a blob of the tar, checking it against its digest.
func (b *Bundle) openBlob(d digest.Digest) (io.ReadCloser, error) {
	e, ok := b.tar.blobs[d]
	if !ok {
		return nil, fmt.Errorf("%w: blob %s is not in the bundle", ErrNotFound, d)
	}
	return newVerifyReader(io.NewSectionReader(b.f, e.off, e.size), nil, d, e.size, func() string { return b.owner(d) }), nil
}

// owner describes what a blob belongs to, for messages: " (layer of image
// ghcr.io/acme/web:1.2)".
func (b *Bundle) owner(d digest.Digest) string {
	if n := b.nodes[d]; n != nil {
		return " (" + n.owner + ")"
	}
	return " (not referenced by the bundle's index)"
}

// Close releases the bundle's file.
func (b *Bundle) Close() error { return b.f.Close() }

// Path is the bundle's file.
func (b *Bundle) Path() string { return b.path }

// Root is the state artifact the bundle was made from: its original
// reference (host/repo:tag or host/repo@sha256:…) and its manifest
// descriptor.
func (b *Bundle) Root() (ref string, desc ocispec.Descriptor) { return b.root, b.rootDesc }

// Platforms lists the platforms the bundle was restricted to; nil means
// all.
func (b *Bundle) Platforms() []string {
	if len(b.platforms) == 0 {
		return nil
	}
	return strings.Split(b.platforms.String(), ",")
}

// Items lists the bundle's top-level manifests: images, charts, the
// state, signatures, each sorted by reference.
func (b *Bundle) Items() []Item {
	out := make([]Item, len(b.items))
	for i, it := range b.items {
		it.Platforms = slices.Clone(it.Platforms)
		it.Excluded = slices.Clone(it.Excluded)
		out[i] = it
	}
	return out
}

// Images lists the container images the bundle carries, each as its
// original repository pinned by digest (host/repo@sha256:…), sorted and
// without duplicates.
func (b *Bundle) Images() []string {
	var out []string
	for _, it := range b.items {
		if it.Role == RoleImage {
			out = append(out, it.Repository+"@"+it.Digest.String())
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Summary totals the bundle's content.
type Summary struct {
	// Blobs and Bytes count the distinct manifests and blobs held.
	Blobs int   `json:"blobs"`
	Bytes int64 `json:"bytes"`
	// Repositories counts the original repositories.
	Repositories int `json:"repositories"`
	// FileSize is the size of the tar file.
	FileSize int64 `json:"fileSize"`
}

// Summary totals the bundle's content.
func (b *Bundle) Summary() Summary {
	s := Summary{Repositories: len(b.repos)}
	for _, n := range b.nodes {
		s.Blobs++
		s.Bytes += n.desc.Size
	}
	if st, err := b.f.Stat(); err == nil {
		s.FileSize = st.Size()
	}
	return s
}
