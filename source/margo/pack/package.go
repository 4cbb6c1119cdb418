package pack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"gopkg.in/yaml.v3"
	"helm.sh/helm/v3/pkg/chart/loader"

	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/oci"
)

// PackageOptions say which application folder to push where.
type PackageOptions struct {
	// Dir holds margo.yaml, its resources and the component folders
	// compose/<name>/ and helm/<name>/.
	Dir string
	// Ref is the package repository; its tag, when set, must equal the
	// description's metadata.version (the default tag).
	Ref oci.Reference
	// ArtifactType of the package manifest; default AppArtifactType (the
	// spec's concept pages write application/vnd.org.margo.app.v1+json).
	ArtifactType string
	// Signer, when set, signs every manifest built (components, then the
	// package) before it is tagged.
	Signer *deliver.Signer
}

// PackageResult lists what was pushed: the components first, then the
// package.
type PackageResult struct {
	ApplicationID string   `json:"applicationId"`
	Version       string   `json:"version"`
	Components    []Pushed `json:"components"`
	Package       Pushed   `json:"package"`
}

// description is the part of an ApplicationDescription the publisher
// needs; the rest is the WFM's business and is pushed as written.
type description struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	ID         string `yaml:"id"`
	Metadata   struct {
		ID      string `yaml:"id"`
		Name    string `yaml:"name"`
		Version string `yaml:"version"`
		Catalog struct {
			Application map[string]any `yaml:"application"`
		} `yaml:"catalog"`
	} `yaml:"metadata"`
	DeploymentProfiles []struct {
		Type       string `yaml:"type"`
		ID         string `yaml:"id"`
		Components []struct {
			Name       string `yaml:"name"`
			Properties struct {
				Repository string `yaml:"repository"`
				Revision   string `yaml:"revision"`
			} `yaml:"properties"`
		} `yaml:"components"`
	} `yaml:"deploymentProfiles"`
}

var appIDRE = regexp.MustCompile(`^[a-z0-9-]{1,200}$`)

// resourceKinds are the catalog files packaged as resource layers: the
// catalog key, and the kind in the media type.
var resourceKinds = []struct{ key, kind string }{
	{"icon", "icon"}, {"descriptionFile", "descriptionFile"}, {"licenseFile", "licenseFile"}, {"releaseNotes", "releaseNotes"},
}

// formats maps file extensions to the +<format> of resource media types.
var formats = map[string]string{".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".svg": "svg+xml", ".md": "markdown", ".markdown": "markdown", ".txt": "plain", ".pdf": "pdf", ".html": "html"}

// readDescription reads and checks Dir/margo.yaml.
func readDescription(dir string) (*description, []byte, error) {
	p := filepath.Join(dir, DescriptionFile)
	fi, err := os.Stat(p)
	if err != nil {
		return nil, nil, fmt.Errorf("application description: %w (the folder needs %s)", err, DescriptionFile)
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxDescription {
		return nil, nil, fmt.Errorf("%s must be a regular file of at most %d bytes", p, maxDescription)
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, nil, err
	}
	var d description
	if err := yaml.Unmarshal(raw, &d); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", p, err)
	}
	var errs []error
	id := d.ID
	if id == "" {
		id = d.Metadata.ID
	}
	d.ID = id
	if !appIDRE.MatchString(id) {
		errs = append(errs, fmt.Errorf("id %q: use 1 to 200 lowercase letters, digits and '-'", id))
	}
	if d.Kind != "" && d.Kind != "ApplicationDescription" {
		errs = append(errs, fmt.Errorf("kind %q: must be ApplicationDescription (or absent)", d.Kind))
	}
	if d.Metadata.Version == "" {
		errs = append(errs, errors.New("metadata.version is required: it is the package's tag"))
	}
	if len(d.DeploymentProfiles) == 0 {
		errs = append(errs, errors.New("deploymentProfiles needs at least one profile"))
	}
	for i, pr := range d.DeploymentProfiles {
		switch pr.Type {
		case "helm", "helm.v3", "compose":
		default:
			errs = append(errs, fmt.Errorf("deploymentProfiles[%d].type %q: berth packages helm and compose profiles", i, pr.Type))
		}
		for j, c := range pr.Components {
			at := fmt.Sprintf("deploymentProfiles[%d].components[%d]", i, j)
			if !componentRE.MatchString(c.Name) {
				errs = append(errs, fmt.Errorf("%s.name %q: use lowercase letters, digits and '-'", at, c.Name))
			}
			if !strings.HasPrefix(c.Properties.Repository, "oci://") {
				errs = append(errs, fmt.Errorf("%s.properties.repository %q: must be an oci:// repository", at, c.Properties.Repository))
			}
			if err := CheckRevision(c.Properties.Revision); err != nil {
				errs = append(errs, fmt.Errorf("%s.properties.%w", at, err))
			}
		}
	}
	if len(errs) > 0 {
		return nil, nil, fmt.Errorf("%s: %w", p, errors.Join(errs...))
	}
	return &d, raw, nil
}

// PushPackage builds and pushes the components found in the folder, then
// the application package.
func PushPackage(ctx context.Context, c *oci.Client, o PackageOptions) (*PackageResult, error) {
	d, raw, err := readDescription(o.Dir)
	if err != nil {
		return nil, err
	}
	ref := o.Ref
	switch {
	case ref.Digest != "":
		return nil, fmt.Errorf("push the package to a tag, not a digest (got %s)", ref)
	case ref.Tag == "":
		ref.Tag = d.Metadata.Version
	case ref.Tag != d.Metadata.Version:
		return nil, fmt.Errorf("the package tag %q must equal metadata.version %q of %s", ref.Tag, d.Metadata.Version, DescriptionFile)
	}
	res := &PackageResult{ApplicationID: d.ID, Version: d.Metadata.Version}
	seen := map[string]bool{}
	for _, pr := range d.DeploymentProfiles {
		kind := strings.TrimSuffix(pr.Type, ".v3")
		for _, comp := range pr.Components {
			key := kind + "/" + comp.Name + "@" + comp.Properties.Repository + ":" + comp.Properties.Revision
			if seen[key] {
				continue
			}
			seen[key] = true
			p, err := pushComponent(ctx, c, o.Dir, kind, comp.Name, comp.Properties.Repository, comp.Properties.Revision, o.Signer)
			if err != nil {
				return nil, err
			}
			res.Components = append(res.Components, *p)
		}
	}
	layers := []blob{newBlob(DescriptionLayerType, raw, map[string]string{ocispec.AnnotationTitle: DescriptionFile})}
	app := d.Metadata.Catalog.Application
	for _, rk := range resourceKinds {
		v, ok := app[rk.key].(string)
		if !ok || v == "" {
			continue
		}
		b, err := resourceLayer(o.Dir, rk.key, rk.kind, v)
		if err != nil {
			return nil, err
		}
		layers = append(layers, b)
	}
	at := o.ArtifactType
	if at == "" {
		at = AppArtifactType
	}
	desc, err := pushManifest(ctx, c, ref, at, emptyConfig(), layers, nil, o.Signer)
	if err != nil {
		return nil, err
	}
	res.Package = Pushed{Kind: "package", URL: ref.WithDigest(desc.Digest.String()).String(), Repository: ref.Repo(), Tag: ref.Tag, Digest: desc.Digest.String(), ArtifactType: at, Built: true, Signed: o.Signer != nil}
	return res, nil
}

// resourceLayer reads a catalog resource file of the folder.
func resourceLayer(dir, key, kind, rel string) (blob, error) {
	clean := path.Clean(strings.TrimPrefix(rel, "./"))
	if !fs.ValidPath(clean) || strings.Contains(rel, "\\") {
		return blob{}, fmt.Errorf("metadata.catalog.application.%s %q must be a relative path inside the folder", key, rel)
	}
	format, ok := formats[strings.ToLower(path.Ext(clean))]
	if !ok {
		return blob{}, fmt.Errorf("metadata.catalog.application.%s %q: unknown format (use one of .png .jpg .svg .md .txt .pdf .html)", key, rel)
	}
	data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(clean)))
	if err != nil {
		return blob{}, fmt.Errorf("metadata.catalog.application.%s: %w", key, err)
	}
	mt := fmt.Sprintf("application/vnd.margo.app.%s.v1+%s", kind, format)
	return newBlob(mt, data, map[string]string{ocispec.AnnotationTitle: clean, AnnotationResource: "metadata.catalog.application." + key}), nil
}

// pushComponent builds and pushes compose/<name> or helm/<name> when the
// folder has it, else checks that the component is in its registry.
func pushComponent(ctx context.Context, c *oci.Client, dir, kind, name, repository, revision string, signer *deliver.Signer) (*Pushed, error) {
	ref, err := oci.ParseReference(repository + ":" + revision)
	if err != nil {
		return nil, fmt.Errorf("component %s: %w", name, err)
	}
	src := filepath.Join(dir, kind, name)
	if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
		desc, rerr := c.Resolve(ctx, ref)
		if rerr != nil {
			return nil, fmt.Errorf("component %s: no folder %s/%s/ to build it from, and %s: %w", name, kind, name, ref, rerr)
		}
		return &Pushed{Kind: kind, Component: name, URL: ref.WithDigest(desc.Digest.String()).String(), Repository: ref.Repo(), Tag: ref.Tag, Digest: desc.Digest.String(), ArtifactType: desc.ArtifactType}, nil
	}
	if kind == "compose" {
		return PushComposeArchive(ctx, c, ComposeOptions{Dir: src, Name: name, Ref: ref, Signer: signer})
	}
	return pushChart(ctx, c, src, ref, name, signer)
}

// pushChart packages a chart folder reproducibly and pushes it with Helm's
// media types; Chart.yaml's version must be the revision.
func pushChart(ctx context.Context, c *oci.Client, src string, ref oci.Reference, component string, signer *deliver.Signer) (*Pushed, error) {
	ch, err := loader.LoadDir(src)
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", src, err)
	}
	if want := strings.ReplaceAll(ref.Tag, "_", "+"); ch.Metadata.Version != want {
		return nil, fmt.Errorf("chart %s has version %q, the component revision is %q: make them equal", src, ch.Metadata.Version, want)
	}
	if last := ref.Repository[strings.LastIndex(ref.Repository, "/")+1:]; last != ch.Metadata.Name {
		return nil, fmt.Errorf("chart %s is named %q, but Helm pulls it from a repository ending in its name: use oci://…/%s", src, ch.Metadata.Name, ch.Metadata.Name)
	}
	cfg, err := json.Marshal(ch.Metadata)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	res, err := buildUnder(ctx, src, ch.Metadata.Name, &buf)
	if err != nil {
		return nil, err
	}
	ann := map[string]string{ocispec.AnnotationTitle: ch.Metadata.Name, ocispec.AnnotationVersion: ch.Metadata.Version}
	if ch.Metadata.Description != "" {
		ann[ocispec.AnnotationDescription] = ch.Metadata.Description
	}
	desc, err := pushManifest(ctx, c, ref, "", newBlob(HelmConfigMediaType, cfg, nil), []blob{newBlob(HelmChartLayerType, buf.Bytes(), nil)}, ann, signer)
	if err != nil {
		return nil, err
	}
	return &Pushed{Kind: "helm", Component: component, URL: ref.WithDigest(desc.Digest.String()).String(), Repository: ref.Repo(), Tag: ref.Tag, Digest: desc.Digest.String(), ArtifactType: HelmConfigMediaType, Built: true, Signed: signer != nil, LayerDigest: res.Digest, Size: int64(buf.Len())}, nil
}
