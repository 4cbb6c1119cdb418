package bundle

import (
	"archive/tar"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/lock"
	"github.com/berth-dev/berth/source/oci"
)

// maxLockSize caps berth.lock.json read from the state.
const maxLockSize = 16 << 20

// CreateOptions say what to bundle.
type CreateOptions struct {
	// State is the state artifact, verified (or explicitly not) by the
	// delivery path: its digest is bundled, and its tag, if any, names it.
	State *deliver.Verified
	// Output is the bundle file to write. It is written under a temporary
	// name next to it and renamed into place once complete.
	Output string
	// Platforms ("linux/arm64", "linux/arm/v7") restricts which child
	// manifests of image indexes are bundled; empty means all.
	Platforms []string
	// Limits cap the extraction of the state, which is read for its lock.
	Limits archive.Limits
	// Jobs is how many blobs are downloaded at once; 0 means 4.
	Jobs int
	// Progress, when set, wraps a reader counting the bytes bundled (size:
	// their total), for a progress display.
	Progress func(r io.Reader, size int64) io.Reader
	// Log receives what is bundled, at debug level; nil logs nothing.
	Log *slog.Logger
}

// plannedItem is a top-level manifest to bundle.
type plannedItem struct {
	role Role
	ref  string // its reference name
	repo oci.Reference
	desc ocispec.Descriptor
}

// plannedBlob is a blob to write: a manifest held in memory (raw), or a
// blob to stream from src.
type plannedBlob struct {
	desc ocispec.Descriptor
	src  oci.Reference
	raw  []byte
}

// creator is one Create.
type creator struct {
	c      *oci.Client
	o      CreateOptions
	pf     platformFilter
	puller *remote.Puller
	ropts  []remote.Option
	log    *slog.Logger

	items []plannedItem
	refs  map[string]bool
	blobs []plannedBlob
	have  map[digest.Digest]bool
	total int64
	held  int64 // manifest bytes held, against maxManifestBytes
}

// Create makes a bundle of the state o.State: the state artifact, its
// signatures (its OCI referrers, found through the referrers API or the
// tag fallback, and cosign's legacy sha256-<hex>.sig tag) and every chart
// and image in its berth.lock.json, all platforms of an image index
// unless o.Platforms restricts them. The state is extracted (through the
// delivery path, digest-checked) to read its lock. Blobs are streamed from
// the registries straight into the tar, each checked against its digest
// while it is copied, and each written once however many images share it.
//
// It returns the written bundle, opened.
func Create(ctx context.Context, c *oci.Client, o CreateOptions) (*Bundle, error) {
	if o.Output == "" {
		return nil, errors.New("create bundle: no output file")
	}
	if o.State == nil {
		return nil, errors.New("create bundle: no state (verify it with package deliver first)")
	}
	pf, err := parsePlatforms(o.Platforms)
	if err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	cr := &creator{c: c, o: o, pf: pf, log: o.Log, refs: map[string]bool{}, have: map[digest.Digest]bool{}}
	if cr.log == nil {
		cr.log = slog.New(slog.DiscardHandler)
	}
	cr.ropts = append(c.RemoteOptions(ctx), remote.WithReferrersTagFallback(true))
	if cr.puller, err = remote.NewPuller(cr.ropts...); err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	cr.ropts = append(cr.ropts, remote.Reuse(cr.puller))

	start := time.Now()
	root, err := cr.plan(ctx)
	if err != nil {
		return nil, err
	}
	cr.log.Debug("planned the bundle", "items", len(cr.items), "blobs", len(cr.blobs), "bytes", cr.total, "took", time.Since(start).String())
	start = time.Now()
	if err := cr.write(ctx, root); err != nil {
		return nil, err
	}
	cr.log.Debug("wrote the bundle", "file", o.Output, "took", time.Since(start).String())
	return Open(ctx, o.Output)
}

// plan lists what to bundle and fetches every manifest.
func (cr *creator) plan(ctx context.Context) (string, error) {
	ref := cr.o.State.Ref
	raw, desc, err := cr.fetchManifest(ctx, ref, ref.Digest, "")
	if err != nil {
		return "", fmt.Errorf("create bundle: state %s: %w", ref, err)
	}
	if desc.Digest.String() != ref.Digest {
		return "", fmt.Errorf("create bundle: state %s: %w: the registry served %s", ref, ErrDigestMismatch, desc.Digest)
	}
	root := refName(ref.Repo(), ref.Tag, desc.Digest)
	if err := cr.add(ctx, RoleState, root, ref, desc, raw); err != nil {
		return "", err
	}

	entries, err := cr.readLock(ctx)
	if err != nil {
		return "", err
	}
	if err := cr.addSignatures(ctx, ref, desc); err != nil {
		return "", err
	}
	for _, e := range entries {
		role := Role(e.Kind)
		if role != RoleImage && role != RoleChart {
			continue
		}
		if e.Digest == "" || e.Repository == "" {
			cr.log.Warn("a lock entry without repository or digest is left out", "kind", e.Kind, "ref", e.Ref, "app", e.App)
			continue
		}
		r, err := oci.ParseReference(e.Repository + "@" + e.Digest)
		if err != nil {
			return "", fmt.Errorf("create bundle: %s in %s: %w", e.Ref, lock.LockFile, err)
		}
		tag := lockTag(e)
		if tag != "" {
			if _, err := oci.ParseReference(e.Repository + ":" + tag); err != nil {
				tag = ""
			}
		}
		refStr := refName(r.Repo(), tag, digest.Digest(e.Digest))
		if cr.refs[refStr] {
			continue
		}
		raw, d, err := cr.fetchManifest(ctx, r, e.Digest, "")
		if err != nil {
			return "", fmt.Errorf("create bundle: %s %s (app %s): %w", e.Kind, refStr, e.App, err)
		}
		r.Tag = tag
		if err := cr.add(ctx, role, refStr, r, d, raw); err != nil {
			return "", err
		}
	}
	return root, nil
}

// lockTag is the tag of a lock entry's reference as written, if any.
func lockTag(e lock.Entry) string {
	if e.Kind == lock.KindChart {
		s := strings.TrimPrefix(e.Ref, oci.Scheme)
		if i := strings.LastIndex(s, ":"); i > strings.LastIndex(s, "/") {
			return strings.ReplaceAll(s[i+1:], "+", "_")
		}
		return ""
	}
	named, err := reference.ParseNormalizedNamed(e.Ref)
	if err != nil {
		return ""
	}
	if t, ok := named.(reference.Tagged); ok {
		return t.Tag()
	}
	return ""
}

// readLock extracts the state and reads its berth.lock.json; a state
// without one has no entries.
func (cr *creator) readLock(ctx context.Context) ([]lock.Entry, error) {
	state := cr.o.State.Ref
	tmp, err := os.MkdirTemp("", "berth-bundle-state-")
	if err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "state")
	if _, err := cr.o.State.Extract(ctx, dir, deliver.ExtractOptions{Limits: cr.o.Limits}); err != nil {
		return nil, fmt.Errorf("create bundle: read the lock of %s: %w", state, err)
	}
	f, err := os.Open(filepath.Join(dir, lock.LockFile))
	if errors.Is(err, os.ErrNotExist) {
		cr.log.Warn("the state has no lock: bundling it without images or charts", "ref", state.String())
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxLockSize+1))
	if err != nil {
		return nil, fmt.Errorf("create bundle: read %s of %s: %w", lock.LockFile, state, err)
	}
	if len(raw) > maxLockSize {
		return nil, fmt.Errorf("create bundle: %w: %s of %s exceeds %d bytes", ErrTooLarge, lock.LockFile, state, maxLockSize)
	}
	var lf struct {
		Kind    string       `json:"kind"`
		Entries []lock.Entry `json:"entries"`
	}
	if err := json.Unmarshal(raw, &lf); err != nil || lf.Kind != "Lock" {
		return nil, fmt.Errorf("create bundle: %s of %s is not a berth lock (kind %q): %v", lock.LockFile, state, lf.Kind, err)
	}
	return lf.Entries, nil
}

// addSignatures adds the state's referrers and legacy .sig tag.
func (cr *creator) addSignatures(ctx context.Context, ref oci.Reference, desc ocispec.Descriptor) error {
	subject, err := name.NewDigest(ref.Repo()+"@"+desc.Digest.String(), cr.c.NameOptions()...)
	if err != nil {
		return fmt.Errorf("create bundle: %w", err)
	}
	idx, err := remote.Referrers(subject, cr.ropts...)
	if err != nil {
		return fmt.Errorf("create bundle: list the referrers of %s: %w", subject, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return fmt.Errorf("create bundle: list the referrers of %s: %w", subject, err)
	}
	for _, d := range im.Manifests {
		raw, rd, err := cr.fetchManifest(ctx, ref, d.Digest.String(), string(d.MediaType))
		if err != nil {
			return fmt.Errorf("create bundle: referrer %s of %s: %w", d.Digest, subject, err)
		}
		if err := cr.add(ctx, RoleSignature, refName(ref.Repo(), "", rd.Digest), ref, rd, raw); err != nil {
			return err
		}
	}
	sigTag := "sha256-" + desc.Digest.Encoded() + ".sig"
	raw, sd, err := cr.fetchManifest(ctx, ref, sigTag, "")
	var terr *transport.Error
	switch {
	case errors.As(err, &terr) && terr.StatusCode == 404, errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("create bundle: signature tag %s of %s: %w", sigTag, ref.Repo(), err)
	}
	return cr.add(ctx, RoleSignature, refName(ref.Repo(), sigTag, sd.Digest), ref.WithTag(sigTag), sd, raw)
}

// fetchManifest fetches the manifest or index target (a tag or digest)
// names in ref's repository, capped and digest-checked. mediaType, when
// known, is the descriptor's.
func (cr *creator) fetchManifest(ctx context.Context, ref oci.Reference, target, mediaType string) ([]byte, ocispec.Descriptor, error) {
	sep := ":"
	if strings.Contains(target, ":") {
		sep = "@"
	}
	r, err := name.ParseReference(ref.Repo()+sep+target, cr.c.NameOptions()...)
	if err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("%w %s%s%s: %v", oci.ErrInvalidReference, ref.Repo(), sep, target, err)
	}
	got, err := cr.puller.Get(ctx, r)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	if len(got.Manifest) > MaxManifestSize {
		return nil, ocispec.Descriptor{}, fmt.Errorf("%w: manifest %s is %d bytes (cap %d)", ErrTooLarge, r, len(got.Manifest), MaxManifestSize)
	}
	d := digest.FromBytes(got.Manifest)
	if sep == "@" && d.String() != target {
		return nil, ocispec.Descriptor{}, fmt.Errorf("%w: manifest %s has digest %s", ErrDigestMismatch, r, d)
	}
	if mediaType == "" {
		mediaType = string(got.MediaType)
	}
	return got.Manifest, ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(got.Manifest))}, nil
}

// add plans a top-level manifest and everything it references.
func (cr *creator) add(ctx context.Context, role Role, refStr string, repo oci.Reference, desc ocispec.Descriptor, raw []byte) error {
	if cr.refs[refStr] {
		return nil
	}
	cr.refs[refStr] = true
	cr.items = append(cr.items, plannedItem{role: role, ref: refStr, repo: repo, desc: desc})
	cr.log.Debug("bundling", "role", string(role), "ref", refStr, "digest", desc.Digest.String())
	if err := cr.addManifest(ctx, repo, desc, raw, string(role)+" "+refStr, 0); err != nil {
		return fmt.Errorf("create bundle: %s %s: %w", role, refStr, err)
	}
	return nil
}

// addManifest plans a manifest (raw, already fetched) and its children.
func (cr *creator) addManifest(ctx context.Context, repo oci.Reference, desc ocispec.Descriptor, raw []byte, owner string, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%s: indexes nest more than %d deep", owner, maxDepth)
	}
	if cr.have[desc.Digest] {
		return nil
	}
	m, index, err := parseManifest(desc, raw)
	if err != nil {
		return fmt.Errorf("manifest %s (%s): %v", desc.Digest, owner, err)
	}
	if cr.held += int64(len(raw)); cr.held > maxManifestBytes {
		return fmt.Errorf("%w: the manifests to bundle exceed %d bytes in all", ErrTooLarge, maxManifestBytes)
	}
	if index {
		for _, c := range m.Manifests {
			if len(cr.pf) > 0 && !isIndexType(string(c.MediaType)) && !cr.pf.match(c.Platform) {
				continue
			}
			if cr.have[c.Digest] {
				continue
			}
			craw, cd, err := cr.fetchManifest(ctx, repo, c.Digest.String(), c.MediaType)
			if err != nil {
				return fmt.Errorf("manifest %s of %s: %w", c.Digest, owner, err)
			}
			if cd.Size != c.Size {
				return fmt.Errorf("manifest %s of %s: %d bytes, its descriptor says %d", c.Digest, owner, cd.Size, c.Size)
			}
			what := strings.TrimSpace("manifest " + platformString(c.Platform) + " of " + owner)
			if err := cr.addManifest(ctx, repo, cd, craw, what, depth+1); err != nil {
				return err
			}
		}
	} else {
		var kids []ocispec.Descriptor
		if m.Config != nil {
			kids = append(kids, *m.Config)
		}
		kids = append(append(kids, m.Layers...), m.Blobs...)
		for _, k := range kids {
			if cr.have[k.Digest] || isNondistributable(k.MediaType) {
				continue
			}
			cr.have[k.Digest] = true
			cr.blobs = append(cr.blobs, plannedBlob{desc: k, src: repo})
			cr.total += k.Size
		}
	}
	cr.have[desc.Digest] = true
	cr.blobs = append(cr.blobs, plannedBlob{desc: desc, raw: raw})
	cr.total += desc.Size
	return nil
}

// tarEntry is a file of the bundle's tar at a precomputed place.
type tarEntry struct {
	hdr     []byte // its header block(s)
	off     int64  // where the header starts
	dataOff int64  // where the data starts
	data    []byte // the data, when held (oci-layout, manifests, index.json)
	blob    *plannedBlob
}

// write writes the planned bundle to a temporary file, then renames it to
// the output. Every entry's place is known beforehand (tar headers are a
// function of name and size), so the headers and manifests are written
// first and the blobs are streamed into their places o.Jobs at a time;
// the file is byte for byte what archive/tar writes in that order.
func (cr *creator) write(ctx context.Context, root string) (err error) {
	out := cr.o.Output
	layout, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	index := ocispec.Index{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   ocispec.MediaTypeImageIndex,
		Annotations: map[string]string{AnnotationRoot: root},
	}
	if len(cr.pf) > 0 {
		index.Annotations[AnnotationPlatforms] = cr.pf.String()
	}
	for _, it := range cr.items {
		d := it.desc
		d.Annotations = map[string]string{AnnotationRefName: it.ref, AnnotationRole: string(it.role)}
		index.Manifests = append(index.Manifests, d)
	}
	indexJSON, err := json.MarshalIndent(index, "", "  ")
	if err != nil {
		return fmt.Errorf("create bundle: encode %s: %w", indexFile, err)
	}

	entries := []*tarEntry{{data: layout}}
	names := []string{layoutFile}
	for i := range cr.blobs {
		pb := &cr.blobs[i]
		e := &tarEntry{data: pb.raw}
		if pb.raw == nil {
			e.blob = pb
		}
		entries = append(entries, e)
		names = append(names, blobPath(pb.desc.Digest))
	}
	entries = append(entries, &tarEntry{data: indexJSON})
	names = append(names, indexFile)
	var off int64
	for i, e := range entries {
		size := int64(len(e.data))
		if e.blob != nil {
			size = e.blob.desc.Size
		}
		var hb bytes.Buffer
		if err := tar.NewWriter(&hb).WriteHeader(fileHeader(names[i], size)); err != nil {
			return fmt.Errorf("create bundle: tar header for %s: %w", names[i], err)
		}
		e.hdr, e.off = hb.Bytes(), off
		e.dataOff = off + int64(len(e.hdr))
		off = e.dataOff + (size+511)/512*512
	}
	total := off + 1024 // the end-of-archive marker: two zero blocks

	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create bundle: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	// Padding and the end marker are the zeros of the extended file.
	if err := f.Truncate(total); err != nil {
		return fmt.Errorf("create bundle: write %s: %w", out, err)
	}
	prog := newMeter(cr.o.Progress, cr.total)
	defer prog.done()
	var blobs []*tarEntry
	for _, e := range entries {
		if _, err := f.WriteAt(e.hdr, e.off); err != nil {
			return fmt.Errorf("create bundle: write %s: %w", out, err)
		}
		if e.blob != nil {
			blobs = append(blobs, e)
			continue
		}
		if _, err := f.WriteAt(e.data, e.dataOff); err != nil {
			return fmt.Errorf("create bundle: write %s: %w", out, err)
		}
		prog.add(int64(len(e.data)))
	}
	start := time.Now()
	if err := cr.copyBlobs(ctx, f, blobs, prog); err != nil {
		return err
	}
	cr.log.Debug("copied the blobs", "blobs", len(blobs), "took", time.Since(start).String())
	if err := f.Sync(); err != nil {
		return fmt.Errorf("create bundle: write %s: %w", out, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("create bundle: write %s: %w", out, err)
	}
	if err := os.Rename(f.Name(), out); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("create bundle: %w", err)
	}
	return nil
}

// copyBlobs streams the blobs into their places, o.Jobs at a time, the
// largest first.
func (cr *creator) copyBlobs(ctx context.Context, f *os.File, blobs []*tarEntry, prog *meter) error {
	slices.SortStableFunc(blobs, func(x, y *tarEntry) int { return cmp.Compare(y.blob.desc.Size, x.blob.desc.Size) })
	jobs := cr.o.Jobs
	if jobs <= 0 {
		jobs = defaultJobs
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ch := make(chan *tarEntry)
	var wg sync.WaitGroup
	for range min(jobs, max(len(blobs), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			for e := range ch {
				if err := cr.copyBlob(ctx, f, e, prog, buf); err != nil {
					cancel(err)
				}
			}
		}()
	}
	for _, e := range blobs {
		select {
		case ch <- e:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(ch)
	wg.Wait()
	return context.Cause(ctx)
}

// copyBlob streams one blob from its registry into its place, checking
// its size and digest on the way.
func (cr *creator) copyBlob(ctx context.Context, f *os.File, e *tarEntry, prog *meter, buf []byte) error {
	if ctx.Err() != nil {
		return nil
	}
	pb := e.blob
	rc, err := cr.c.OpenBlob(ctx, pb.src, pb.desc, 0)
	if err != nil {
		return fmt.Errorf("create bundle: %w", err)
	}
	defer rc.Close()
	w := io.NewOffsetWriter(f, e.dataOff)
	n, err := io.CopyBuffer(w, io.LimitReader(prog.reader(rc), pb.desc.Size+1), buf)
	if err == nil && n != pb.desc.Size {
		err = fmt.Errorf("%w: blob %s: %d bytes, its descriptor says %d", ErrDigestMismatch, pb.desc.Digest, n, pb.desc.Size)
	}
	if err != nil {
		return fmt.Errorf("create bundle: copy blob %s from %s: %w", pb.desc.Digest, pb.src.Repo(), err)
	}
	return nil
}

// fileHeader is the tar header of every file: reproducible metadata.
func fileHeader(name string, size int64) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     size,
		Mode:     0o644,
		ModTime:  time.Unix(0, 0),
		Format:   tar.FormatPAX,
	}
}
