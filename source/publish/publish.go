// Package publish turns a folder of a Git checkout into a Flux-compatible OCI
// artifact: it reads provenance, pins every chart and image berth.yaml
// references to a digest, packs the folder reproducibly and pushes it.
package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/lock"
	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/source/provenance"
	"github.com/berth-dev/berth/state"
)

// ErrDirty is returned when the folder has uncommitted changes and the
// caller did not allow them.
var ErrDirty = errors.New("uncommitted changes")

// Options say what to push where.
type Options struct {
	// Dir is the folder to pack; it must be inside a Git work tree.
	Dir string
	// Ref is the destination, with the tag to point at it.
	Ref oci.Reference
	// Tags are extra tags for the same manifest.
	Tags []string
	// Ignore holds extra gitignore-style patterns to leave out.
	Ignore []string
	// Annotations are added to the manifest; they cannot override the
	// provenance annotations.
	Annotations map[string]string
	// AllowDirty pushes a work tree with uncommitted changes.
	AllowDirty bool
	// Progress, when set, wraps the layer upload reader.
	Progress func(r io.Reader, size int64) io.Reader
	// Packing, when set, is told how far packing the folder has got (bytes
	// of file contents packed, of total), before the upload starts.
	Packing func(done, total int64)
}

// Result describes what was pushed.
type Result struct {
	URL        string       `json:"url"`
	Repository string       `json:"repository"`
	Tags       []string     `json:"tags"`
	Digest     string       `json:"digest"`
	Source     string       `json:"source,omitempty"`
	Revision   string       `json:"revision"`
	Created    string       `json:"created"`
	Files      int          `json:"files"`
	Size       int64        `json:"size"`
	Locked     []lock.Entry `json:"locked,omitempty"`
	Dirty      []string     `json:"dirty,omitempty"`
}

// Push packs and pushes o.Dir by digest: it tags nothing (deliver.Publish
// tags o.Ref's tag and o.Tags, listed in Result.Tags, once the digest is
// signed). The same commit always gives the same manifest digest, from any
// clone.
func Push(ctx context.Context, c *oci.Client, o Options) (*Result, error) {
	info, err := provenance.Read(o.Dir)
	if err != nil {
		return nil, err
	}
	if len(info.Dirty) > 0 && !o.AllowDirty {
		return nil, fmt.Errorf("%w in %s: %s (commit them, or pass --allow-dirty)", ErrDirty, o.Dir, strings.Join(info.Dirty, ", "))
	}
	locked, err := lock.Lock(ctx, o.Dir, Resolver{Client: c})
	if err != nil {
		return nil, err
	}
	var overlay map[string][]byte
	var entries []lock.Entry
	var plan *state.Rollout
	if locked != nil {
		overlay, entries, plan = locked.Overlay, locked.Lock, locked.Rollout
	}
	f, built, err := buildTemp(ctx, o.Dir, archive.BuildOptions{Ignore: o.Ignore, Overlay: overlay, Progress: o.Packing})
	if err != nil {
		return nil, err
	}
	defer os.Remove(f)

	ann := maps.Clone(o.Annotations)
	if ann == nil {
		ann = map[string]string{}
	}
	ann[ocispec.AnnotationRevision] = info.Revision
	ann[ocispec.AnnotationCreated] = info.Created.Format(time.RFC3339)
	if info.Source != "" {
		ann[ocispec.AnnotationSource] = info.Source
	} else {
		delete(ann, ocispec.AnnotationSource)
	}
	// The plan, signed with the manifest, lets a device place itself
	// before it downloads the layer; berth.yaml's is the only one.
	if plan != nil {
		ann[state.RolloutAnnotation] = plan.Annotation()
	} else {
		delete(ann, state.RolloutAnnotation)
	}
	layer := oci.Blob{
		Digest: digest.Digest(built.Digest),
		Size:   built.Compressed,
		Open: func() (io.ReadCloser, error) {
			fh, err := os.Open(f)
			if err != nil || o.Progress == nil {
				return fh, err
			}
			return readCloser{o.Progress(fh, built.Compressed), fh}, nil
		},
	}
	desc, err := c.Push(ctx, o.Ref.WithTag(""), oci.Artifact{Layer: layer, Annotations: ann})
	if err != nil {
		return nil, err
	}
	tags := append([]string{o.Ref.Tag}, o.Tags...)
	return &Result{
		URL:        o.Ref.WithDigest(desc.Digest.String()).String(),
		Repository: o.Ref.Repo(),
		Tags:       tags,
		Digest:     desc.Digest.String(),
		Source:     info.Source,
		Revision:   info.Revision,
		Created:    ann[ocispec.AnnotationCreated],
		Files:      built.Files,
		Size:       built.Size,
		Locked:     entries,
		Dirty:      info.Dirty,
	}, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// built is what buildTemp reports: archive.BuildResult plus the compressed
// size.
type built struct {
	archive.BuildResult
	Compressed int64
}

// buildTemp packs dir into a temporary file and returns its path.
func buildTemp(ctx context.Context, dir string, opts archive.BuildOptions) (string, built, error) {
	fh, err := os.CreateTemp("", "berth-layer-*.tgz")
	if err != nil {
		return "", built{}, fmt.Errorf("create temporary layer file: %w", err)
	}
	res, err := archive.Build(ctx, dir, fh, opts)
	if err == nil {
		err = fh.Sync()
	}
	var size int64
	if err == nil {
		var st os.FileInfo
		if st, err = fh.Stat(); err == nil {
			size = st.Size()
		}
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(fh.Name())
		return "", built{}, fmt.Errorf("pack %s: %w", dir, err)
	}
	return fh.Name(), built{BuildResult: res, Compressed: size}, nil
}

// Resolver resolves image and chart references to manifest digests for the
// lock step.
type Resolver struct{ Client *oci.Client }

var _ lock.Resolver = Resolver{}

// Resolve returns the digest of the manifest (or index) ref names.
func (r Resolver) Resolve(ctx context.Context, ref string) (string, error) {
	parsed, err := oci.ParseReference(ref)
	if err != nil {
		return "", err
	}
	desc, err := r.Client.Resolve(ctx, parsed)
	if err != nil {
		return "", err
	}
	return desc.Digest.String(), nil
}

// DiffOptions control Diff.
type DiffOptions struct {
	// Ignore holds extra gitignore-style patterns to leave out.
	Ignore []string
	// Limits cap what is read from the artifact.
	Limits archive.Limits
}

// Diff compares what pushing dir would pack (pinned as push pins it) with
// the artifact ref names, which must carry a digest.
func Diff(ctx context.Context, c *oci.Client, dir string, ref oci.Reference, o DiffOptions) (archive.Changes, error) {
	locked, err := lock.Lock(ctx, dir, Resolver{Client: c})
	if err != nil {
		return archive.Changes{}, err
	}
	bo := archive.BuildOptions{Ignore: o.Ignore}
	if locked != nil {
		bo.Overlay = locked.Overlay
	}
	_, m, err := c.Manifest(ctx, ref)
	if err != nil {
		return archive.Changes{}, err
	}
	layer, err := oci.SelectLayer(m, "")
	if err != nil {
		return archive.Changes{}, fmt.Errorf("%s: %w", ref, err)
	}
	rc, err := c.OpenBlob(ctx, ref, layer, o.Limits.MaxSize)
	if err != nil {
		return archive.Changes{}, err
	}
	defer rc.Close()
	ch, err := archive.Diff(ctx, dir, rc, archive.DiffOptions{Build: bo, Limits: o.Limits})
	if err != nil {
		return archive.Changes{}, fmt.Errorf("compare %s with %s: %w", dir, ref, err)
	}
	return ch, nil
}
