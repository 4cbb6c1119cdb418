// Package pack is the publishing side of berth's Margo support: it builds
// Compose Archives "the OCI way" (Margo PR #200) and Margo application
// packages from folders, reproducibly, and pushes them the way
// deliver.Publish does: every manifest by digest, then signed (when a
// signer is given), and only then tagged, so that a signature that fails
// leaves no tag behind.
//
// A Compose Archive is a tar+gzip with exactly one top-level folder (the
// component name) holding compose.yaml and what it references, pushed as
// an OCI image manifest with artifactType
// application/vnd.org.margo.component.compose+json, the empty config, and
// one layer application/vnd.org.margo.component.compose.tar+gzip annotated
// org.margo.component.type=compose and org.margo.component.version.
//
// An application package is the folder of an ApplicationDescription
// (margo.yaml) and its resources (icon, description, licence, release
// notes), pushed as an OCI image manifest with artifactType
// application/vnd.margo.app.v1+json, the empty config, one layer per
// file (application/vnd.margo.app.description.v1+yaml for margo.yaml;
// application/vnd.margo.app.<kind>.v1+<format> for the resources, marked
// with org.margo.app.resource), tagged with metadata.version. The
// components its deployment profiles reference are built from the folder
// too when it holds them: compose/<component>/ (a Compose project) and
// helm/<component>/ (a chart, pushed with Helm's media types); a
// component without a folder must already be in its registry.
//
// Archives are built with berth's reproducible archiver (sorted entries,
// zeroed owners and times, normalised modes) and manifests carry no time:
// the same input always gives the same digests.
package pack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/oci"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types and annotations.
const (
	ComposeArtifactType   = "application/vnd.org.margo.component.compose+json"
	ComposeLayerType      = "application/vnd.org.margo.component.compose.tar+gzip"
	AppArtifactType       = "application/vnd.margo.app.v1+json"
	DescriptionLayerType  = "application/vnd.margo.app.description.v1+yaml"
	AnnotationType        = "org.margo.component.type"
	AnnotationVersion     = "org.margo.component.version"
	AnnotationResource    = "org.margo.app.resource"
	HelmConfigMediaType   = "application/vnd.cncf.helm.config.v1+json"
	HelmChartLayerType    = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
	DescriptionFile       = "margo.yaml"
	maxDescription        = 1 << 20
	componentNamePattern  = `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	revisionHelp          = "a SemVer 2.0 version without a leading v, with _ for +, such as 1.4.0"
	composeFileName       = "compose.yaml"
	defaultComposeFileErr = "has no compose.yaml (Margo accepts only that name)"
)

var componentRE = regexp.MustCompile(componentNamePattern)

// Pushed is one manifest pushed.
type Pushed struct {
	// Kind is "compose", "helm" or "package".
	Kind string `json:"kind"`
	// Component is the component name (empty for the package).
	Component    string `json:"component,omitempty"`
	URL          string `json:"url"`
	Repository   string `json:"repository"`
	Tag          string `json:"tag"`
	Digest       string `json:"digest"`
	ArtifactType string `json:"artifactType"`
	// Built is false for a component taken as it already is in its
	// registry.
	Built bool `json:"built"`
	// Signed is set when berth signed the manifest before tagging it.
	Signed bool `json:"signed"`
	// LayerDigest and Size describe the content layer (archives).
	LayerDigest string `json:"layerDigest,omitempty"`
	Size        int64  `json:"size,omitempty"`
}

// CheckRevision checks a component revision: a SemVer 2.0 version without
// a leading v, with _ for +.
func CheckRevision(rev string) error {
	if strings.Contains(rev, "+") {
		return fmt.Errorf("revision %q: write + as _ (+ is not allowed in OCI tags): %s", rev, revisionHelp)
	}
	if _, err := semver.StrictNewVersion(strings.ReplaceAll(rev, "_", "+")); err != nil {
		return fmt.Errorf("revision %q is not %s", rev, revisionHelp)
	}
	return nil
}

// BuildComposeArchive writes the Compose Archive of the project folder dir
// to w: one top-level folder name holding dir's files. It checks that dir
// holds compose.yaml.
func BuildComposeArchive(ctx context.Context, dir, name string, w io.Writer) (archive.BuildResult, error) {
	if !componentRE.MatchString(name) || len(name) > 63 {
		return archive.BuildResult{}, fmt.Errorf("component name %q: use lowercase letters, digits and '-'", name)
	}
	if fi, err := os.Stat(filepath.Join(dir, composeFileName)); err != nil || !fi.Mode().IsRegular() {
		return archive.BuildResult{}, fmt.Errorf("%s %s", dir, defaultComposeFileErr)
	}
	return buildUnder(ctx, dir, name, w)
}

// buildUnder archives dir as the single top-level folder top.
func buildUnder(ctx context.Context, dir, top string, w io.Writer) (archive.BuildResult, error) {
	stage, err := os.MkdirTemp("", "berth-pack-*")
	if err != nil {
		return archive.BuildResult{}, err
	}
	defer os.RemoveAll(stage)
	if err := os.CopyFS(filepath.Join(stage, top), os.DirFS(dir)); err != nil {
		if errors.Is(err, fs.ErrInvalid) {
			err = fmt.Errorf("%w (symlinks cannot be packed into a Margo component: replace them by the files)", err)
		}
		return archive.BuildResult{}, fmt.Errorf("stage %s: %w", dir, err)
	}
	// The folder's .berthignore applies, rewritten below the top folder;
	// the staging root has none.
	opts := archive.BuildOptions{}
	if data, err := os.ReadFile(filepath.Join(dir, archive.IgnoreFile)); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				opts.Ignore = append(opts.Ignore, underTop(top, l))
			}
		}
		opts.Ignore = append(opts.Ignore, "/"+top+"/"+archive.IgnoreFile)
	}
	return archive.Build(ctx, stage, w, opts)
}

// underTop rewrites a gitignore pattern of a folder for the same folder
// staged as top: a pattern with no slash but a trailing one matches at any
// depth, one with a slash is anchored to the folder.
func underTop(top, pat string) string {
	neg := ""
	if p, ok := strings.CutPrefix(pat, "!"); ok {
		neg, pat = "!", p
	}
	if !strings.Contains(strings.TrimSuffix(pat, "/"), "/") {
		return neg + "/" + top + "/**/" + pat
	}
	return neg + "/" + top + "/" + strings.TrimPrefix(pat, "/")
}

// blob is content to push.
type blob struct {
	desc ocispec.Descriptor
	data []byte
}

func newBlob(mediaType string, data []byte, ann map[string]string) blob {
	return blob{desc: ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data)), Annotations: ann}, data: data}
}

// pushManifest pushes the blobs and an image manifest of artifactType
// with config and layers to ref's repository by digest, signs that digest
// with signer (when not nil), and only then points ref's tag at it, as
// deliver.Publish does: a signature that fails leaves no tag, so nothing
// tracking the tag (a WFM, a device) sees an unsigned component. The
// manifest is encoded deterministically.
func pushManifest(ctx context.Context, c *oci.Client, ref oci.Reference, artifactType string, config blob, layers []blob, ann map[string]string, signer *deliver.Signer) (ocispec.Descriptor, error) {
	repo, err := c.Repository(ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	tag := ref.Tag
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType,
		Config:       config.desc,
		Annotations:  ann,
	}
	for _, l := range layers {
		m.Layers = append(m.Layers, l.desc)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	for _, b := range append([]blob{config}, layers...) {
		d := b.desc
		d.Annotations, d.Data = nil, nil
		ok, err := repo.Exists(ctx, d)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("push to %s: %w", repo.Reference, err)
		}
		if !ok {
			if err := repo.Push(ctx, d, bytes.NewReader(b.data)); err != nil {
				return ocispec.Descriptor{}, fmt.Errorf("push blob %s to %s: %w", d.Digest, repo.Reference, err)
			}
		}
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(raw), Size: int64(len(raw)), ArtifactType: artifactType}
	pushed := ref.WithDigest(desc.Digest.String())
	if ok, err := repo.Exists(ctx, desc); err != nil || !ok {
		if err := repo.Push(ctx, desc, bytes.NewReader(raw)); err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("push manifest to %s@%s: %w", repo.Reference, desc.Digest, err)
		}
	}
	if signer != nil {
		if err := deliver.Sign(ctx, c, pushed, *signer); err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("%w (%s was pushed but not tagged %s: sign it with `berth sign`, then tag it with `berth tag`)", err, pushed, tag)
		}
	}
	if err := repo.Tag(ctx, desc, tag); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("tag %s as %s: %w", pushed, tag, err)
	}
	return desc, nil
}

// emptyConfig is the OCI empty descriptor with its data.
func emptyConfig() blob {
	d := ocispec.DescriptorEmptyJSON
	return blob{desc: d, data: []byte("{}")}
}

// ComposeOptions say which Compose project to push where.
type ComposeOptions struct {
	// Dir is the project folder (with compose.yaml).
	Dir string
	// Name is the top-level folder of the archive; default the last path
	// segment of Ref's repository.
	Name string
	// Ref is the repository and tag (the revision).
	Ref oci.Reference
	// Annotations are added to the layer (org.opencontainers.image.*).
	Annotations map[string]string
	// Signer, when set, signs the manifest before it is tagged; the caller
	// loads it first, so that a missing password fails before anything is
	// uploaded.
	Signer *deliver.Signer
}

// PushComposeArchive builds and pushes one Compose Archive.
func PushComposeArchive(ctx context.Context, c *oci.Client, o ComposeOptions) (*Pushed, error) {
	if o.Ref.Tag == "" || o.Ref.Digest != "" {
		return nil, fmt.Errorf("push a Compose Archive to a tag, the component revision: oci://HOST/REPO:1.0.0 (got %s)", o.Ref)
	}
	if err := CheckRevision(o.Ref.Tag); err != nil {
		return nil, err
	}
	name := o.Name
	if name == "" {
		name = o.Ref.Repository[strings.LastIndex(o.Ref.Repository, "/")+1:]
	}
	var buf bytes.Buffer
	res, err := BuildComposeArchive(ctx, o.Dir, name, &buf)
	if err != nil {
		return nil, err
	}
	ann := maps.Clone(o.Annotations)
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationType] = "compose"
	ann[AnnotationVersion] = o.Ref.Tag
	ann[ocispec.AnnotationTitle] = name + ".tar.gz"
	if _, ok := ann[ocispec.AnnotationVersion]; !ok {
		ann[ocispec.AnnotationVersion] = o.Ref.Tag
	}
	layer := newBlob(ComposeLayerType, buf.Bytes(), ann)
	desc, err := pushManifest(ctx, c, o.Ref, ComposeArtifactType, emptyConfig(), []blob{layer}, nil, o.Signer)
	if err != nil {
		return nil, err
	}
	return &Pushed{
		Kind: "compose", Component: name, URL: o.Ref.WithDigest(desc.Digest.String()).String(),
		Repository: o.Ref.Repo(), Tag: o.Ref.Tag, Digest: desc.Digest.String(), ArtifactType: ComposeArtifactType,
		Built: true, Signed: o.Signer != nil, LayerDigest: res.Digest, Size: int64(buf.Len()),
	}, nil
}
