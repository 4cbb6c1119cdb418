package helm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/ignore"
	"helm.sh/helm/v3/pkg/registry"

	"github.com/berth-dev/berth/internal/errdef"
	"github.com/berth-dev/berth/internal/readcap"
	"github.com/berth-dev/berth/source/mirror"
	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/state"
)

// Limits on what is read to make a release.
const (
	// MaxChartSize caps the compressed chart layer of an OCI chart.
	MaxChartSize = 16 << 20
	// MaxValuesSize caps a values file, in the artifact or on the device.
	MaxValuesSize = 4 << 20
)

// loadedChart is the chart of an app, loaded and identified.
type loadedChart struct {
	chart *chart.Chart
	// ref names the chart in messages: oci://host/repo:version, or the
	// chart folder in the artifact.
	ref string
	// digest identifies the content: the manifest digest of an OCI chart,
	// "sha256:" and the hash of the files of a chart folder (see
	// loadPathChart).
	digest string
	// mirror is the registry mirror that served an OCI chart; "" for its
	// own registry and for a chart folder.
	mirror string
}

// loadChart loads the chart of app: from its folder in the revision, or
// from its OCI registry by digest.
func (a *Applier) loadChart(ctx context.Context, rev state.Revision, app state.App) (*loadedChart, error) {
	h := app.Helm
	if h.Path != "" {
		ch, digest, err := loadPathChart(rev.Dir, h.Path)
		if err != nil {
			return nil, err
		}
		return &loadedChart{chart: ch, ref: h.Path, digest: digest}, nil
	}
	return a.pullChart(ctx, h)
}

// loadPathChart loads the chart folder dir/p the way `helm install
// ./folder` does (.helmignore and Helm's default ignores honoured), with
// every file read through an os.Root at dir: no path or symlink reaches
// outside the revision. It returns the chart and the hash of its files:
// "sha256:" and the hex sha256 of, for each file loaded in path order, its
// slash-separated path and content, each preceded by its length.
func loadPathChart(dir, p string) (*chart.Chart, string, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, "", fmt.Errorf("chart folder %q: %w", p, err)
	}
	defer root.Close()
	fi, err := root.Stat(filepath.FromSlash(p))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, "", fmt.Errorf("chart folder %q does not exist in the revision", p)
	case err != nil:
		return nil, "", fmt.Errorf("chart folder %q: %w", p, err)
	case !fi.IsDir():
		return nil, "", fmt.Errorf("chart path %q is not a folder", p)
	}
	fsys, err := fs.Sub(root.FS(), p)
	if err != nil {
		return nil, "", fmt.Errorf("chart folder %q: %w", p, err)
	}
	rules := ignore.Empty()
	if data, err := readcap.File(fsys, ignore.HelmIgnore, MaxValuesSize); err == nil {
		if rules, err = ignore.Parse(bytes.NewReader(data)); err != nil {
			return nil, "", fmt.Errorf("chart folder %q: %s: %w", p, ignore.HelmIgnore, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, "", fmt.Errorf("chart folder %q: %w", p, err)
	}
	rules.AddDefaults()

	var files []*loader.BufferedFile
	hash := sha256.New()
	total := int64(0)
	err = fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name == "." {
			return nil
		}
		// Stat follows a symlink, inside the root only.
		fi, err := fs.Stat(fsys, name)
		if err != nil {
			return err
		}
		if fi.IsDir() {
			if d.Type()&fs.ModeSymlink != 0 {
				return fmt.Errorf("%s is a symlink to a folder: not followed in a chart", name)
			}
			if rules.Ignore(name, fi) {
				return fs.SkipDir
			}
			return nil
		}
		if rules.Ignore(name, fi) {
			return nil
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", name)
		}
		if fi.Size() > loader.MaxDecompressedFileSize {
			return fmt.Errorf("%s is larger than %d bytes", name, loader.MaxDecompressedFileSize)
		}
		if total += fi.Size(); total > loader.MaxDecompressedChartSize {
			return fmt.Errorf("the chart is larger than %d bytes", loader.MaxDecompressedChartSize)
		}
		data, err := readcap.File(fsys, name, loader.MaxDecompressedFileSize)
		if err != nil {
			return err
		}
		writeField(hash, []byte(name))
		writeField(hash, data)
		files = append(files, &loader.BufferedFile{Name: name, Data: data})
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("chart folder %q: %w", p, err)
	}
	ch, err := loader.LoadFiles(files)
	if err != nil {
		return nil, "", fmt.Errorf("chart folder %q: %w", p, err)
	}
	return ch, "sha256:" + hex.EncodeToString(hash.Sum(nil)), nil
}

// writeField writes b preceded by its length, so that no two different
// lists of fields hash the same.
func writeField(w io.Writer, b []byte) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(b)))
	w.Write(n[:])
	w.Write(b)
}

// chartTag is the OCI tag of a chart version: Helm pushes "+" as "_".
func chartTag(version string) string { return strings.ReplaceAll(version, "+", "_") }

// pullChart fetches the OCI chart of h by the digest berth.yaml pins,
// through the failover of package mirror over the registry mirrors
// (Options.Mirrors): from each endpoint in order, at most
// Options.PullTimeout each, the manifest by digest (its digest and size
// verified), then the chart layer through a size-capped, digest-verifying
// reader. A chart is loaded only once every byte of its layer has been
// verified. An endpoint that does not serve the chart (not found,
// unreachable, refused credentials) passes to the next; content that does
// not match its digest, or is not a Helm chart, is refused and fetched
// nowhere else.
func (a *Applier) pullChart(ctx context.Context, h *state.Helm) (*loadedChart, error) {
	repo := strings.TrimPrefix(h.Chart, oci.Scheme)
	named := fmt.Sprintf("chart %s version %s", h.Chart, h.Version)
	if h.Digest == "" {
		return nil, fmt.Errorf("%w: %s has no digest in berth.yaml: an OCI chart is deployed only by the digest the lock step writes when the revision is pushed", ErrNoDigest, named)
	}
	ref := repo + ":" + chartTag(h.Version) + "@" + h.Digest
	eps, err := a.mirrors.Resolve(ref)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", named, err)
	}
	client, err := a.ociClient()
	if err != nil {
		return nil, err
	}
	o := mirror.Options{What: named, Timeout: a.opts.PullTimeout, Log: a.log.With("applier", "helm", "chart", h.Chart)}
	ch, i, err := mirror.Try(ctx, eps, o, func(ctx context.Context, ep mirror.Endpoint) (*chart.Chart, error) {
		r, err := oci.ParseReference(ep.Ref)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", named, err)
		}
		return a.pullFrom(ctx, client, r, h, named)
	})
	if err == nil {
		ep := eps[i]
		a.log.Info("helm: pulled chart", "chart", h.Chart, "version", h.Version, "digest", h.Digest, "from", ep.Ref, "mirror", ep.Name())
		return &loadedChart{chart: ch, ref: h.Chart + ":" + h.Version, digest: h.Digest, mirror: ep.Mirror}, nil
	}
	var te *mirror.TriedError
	notFound := errors.Is(err, oci.ErrNotFound) && (!errors.As(err, &te) || te.All(oci.ErrNotFound))
	if notFound && len(eps) > 0 {
		// Say what the version's tag points at, when a registry tells.
		msg := fmt.Sprintf("%s: no registry serves the digest %s that berth.yaml pins", named, h.Digest)
		if r, err := oci.ParseReference(eps[len(eps)-1].Ref); err == nil {
			if desc, err := client.Resolve(ctx, r.WithTag(chartTag(h.Version))); err == nil {
				msg += fmt.Sprintf(" (%s:%s is %s)", r.Repo(), chartTag(h.Version), desc.Digest)
			}
		}
		tried := "[source] " + err.Error()
		if te != nil {
			tried = te.Tried()
		}
		return nil, fmt.Errorf("%w: %s; tried in order: %s", ErrChartDigest, msg, tried)
	}
	if te == nil && !errors.Is(err, errdef.ErrRefused) {
		return nil, fmt.Errorf("%s: %w", named, err)
	}
	return nil, err
}

// pullFrom fetches and loads the chart from one endpoint.
func (a *Applier) pullFrom(ctx context.Context, client *oci.Client, r oci.Reference, h *state.Helm, named string) (*chart.Chart, error) {
	desc, m, err := client.Manifest(ctx, r)
	switch {
	case errors.Is(err, oci.ErrDigestMismatch) || errors.Is(err, oci.ErrTooLarge):
		return nil, fmt.Errorf("%w: %s from %s: %w", ErrChartDigest, named, r, err)
	case err != nil:
		return nil, err
	case desc.Digest.String() != h.Digest:
		return nil, fmt.Errorf("%w: %s: %s served manifest %s, berth.yaml pins %s", ErrChartDigest, named, r.Repo(), desc.Digest, h.Digest)
	}
	if m.Config.MediaType != registry.ConfigMediaType {
		return nil, fmt.Errorf("%w: %s: %s@%s is not a Helm chart (config media type %q, want %s)", ErrNotChart, named, r.Repo(), h.Digest, m.Config.MediaType, registry.ConfigMediaType)
	}
	layer, err := oci.SelectLayer(m, registry.ChartLayerMediaType)
	if err != nil {
		if layer, err = oci.SelectLayer(m, registry.LegacyChartLayerMediaType); err != nil {
			return nil, fmt.Errorf("%w: %s: %s@%s has no %s layer", ErrNotChart, named, r.Repo(), h.Digest, registry.ChartLayerMediaType)
		}
	}
	rc, err := client.OpenBlob(ctx, r, layer, MaxChartSize)
	if err != nil {
		if errors.Is(err, oci.ErrTooLarge) || errors.Is(err, oci.ErrDigestMismatch) {
			return nil, fmt.Errorf("%w: %s: %w", ErrChartDigest, named, err)
		}
		return nil, err
	}
	defer rc.Close()
	// The layer is at most MaxChartSize (OpenBlob refused a larger
	// descriptor, and reads no more than the descriptor's size): it is
	// verified whole before Helm parses a byte of it.
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, rc); err != nil {
		if errors.Is(err, oci.ErrDigestMismatch) {
			return nil, fmt.Errorf("%w: %s: chart layer from %s: %w", ErrChartDigest, named, r.Repo(), err)
		}
		return nil, fmt.Errorf("%s: read the chart layer from %s: %w", named, r.Repo(), err)
	}
	ch, err := loader.LoadArchive(&buf)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: load the chart archive: %w", ErrNotChart, named, err)
	}
	if want := path.Base(r.Repository); ch.Name() != want || ch.Metadata.Version != h.Version {
		return nil, fmt.Errorf("%w: %s: the artifact holds chart %s version %s", ErrNotChart, named, ch.Name(), ch.Metadata.Version)
	}
	return ch, nil
}

// ociClient returns the registry client of chart pulls, made on first use.
func (a *Applier) ociClient() (*oci.Client, error) {
	a.ociMu.Lock()
	defer a.ociMu.Unlock()
	if a.oci != nil {
		return a.oci, nil
	}
	c, err := oci.NewClient(oci.Options{
		DockerConfig: a.opts.DockerConfig,
		CAFile:       a.opts.CAFile,
		Insecure:     a.opts.PlainHTTP,
		UserAgent:    "berth",
	})
	if err != nil {
		return nil, fmt.Errorf("registry client for charts: %w", err)
	}
	a.oci = c
	return c, nil
}

// values returns the effective values of app, merged the way Helm merges
// -f files: its valuesFiles (read from the revision through an os.Root),
// in order, then its inline values, then the device-local file
// <ValuesDir>/<app>.yaml when it exists; a later map key replaces an
// earlier one, maps are merged recursively. The result is normalised
// through JSON, as Helm stores it.
func (a *Applier) values(rev state.Revision, app state.App) (map[string]any, error) {
	h := app.Helm
	vals := map[string]any{}
	if len(h.ValuesFiles) > 0 {
		root, err := os.OpenRoot(rev.Dir)
		if err != nil {
			return nil, fmt.Errorf("values files: %w", err)
		}
		defer root.Close()
		for _, f := range h.ValuesFiles {
			data, err := readcap.File(root.FS(), f, MaxValuesSize)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil, fmt.Errorf("values file %q does not exist in the revision", f)
				}
				return nil, fmt.Errorf("values file %q: %w", f, err)
			}
			v, err := chartutil.ReadValues(data)
			if err != nil {
				return nil, fmt.Errorf("values file %q: %w", f, err)
			}
			vals = mergeMaps(vals, v)
		}
	}
	if len(h.Values) > 0 {
		vals = mergeMaps(vals, h.Values)
	}
	local := filepath.Join(a.opts.ValuesDir, app.Name+".yaml")
	dir, err := os.OpenRoot(a.opts.ValuesDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("device values folder %s: %w", a.opts.ValuesDir, err)
	default:
		defer dir.Close()
		data, err := readcap.File(dir.FS(), app.Name+".yaml", MaxValuesSize)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("device values file %s: %w", local, err)
		default:
			v, err := chartutil.ReadValues(data)
			if err != nil {
				return nil, fmt.Errorf("device values file %s: %w", local, err)
			}
			vals = mergeMaps(vals, v)
		}
	}
	b, err := json.Marshal(vals)
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	out := map[string]any{}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	return out, nil
}

// mergeMaps returns a with b on top, recursively for maps (as Helm's CLI
// merges values files); a and b are not changed.
func mergeMaps(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a))
	maps.Copy(out, a)
	for k, v := range b {
		if vm, ok := v.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				out[k] = mergeMaps(am, vm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// configHash is the LabelConfigHash of a release: the first 32 hex digits
// (a label value has at most 63 characters) of the sha256 of the chart
// digest and the effective values in canonical JSON. The revision digest,
// where the revision is extracted and which mirror served the chart are
// not part of it.
func configHash(chartDigest string, vals map[string]any) (string, error) {
	b, err := json.Marshal(struct {
		Chart  string         `json:"chart"`
		Values map[string]any `json:"values"`
	}{chartDigest, vals})
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16]), nil
}
