package materialize

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/time/rate"
	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/oci"
)

// Media types of a Helm chart's layer in OCI (helm.sh/helm/v3/pkg/registry).
const (
	chartLayerType       = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
	legacyChartLayerType = "application/tar+gzip"
	// maxChartSize caps a chart's compressed layer, as the Helm applier
	// does for the charts it pulls.
	maxChartSize = 16 << 20
	// maxChartFile caps the Chart.yaml read to check a chart.
	maxChartFile = 1 << 20
)

// Download says how the components' layers download (see
// deliver.ExtractOptions): what a reset or a restart cut off resumes with
// HTTP Range from the partial kept in PartialDir (Resumes times in a row
// within one download), the rate is capped by Limiter, and a download that
// would leave less than MinFree on the revision's file system is not
// started (deliver.ErrNoSpace). The zero value resumes nothing, caps
// nothing and checks nothing.
type Download struct {
	PartialDir string
	Resumes    int
	Limiter    *rate.Limiter
	MinFree    deliver.MinFree
}

// extract extracts v's layer of type layerType, at most maxLayer bytes,
// into the folder rel of the revision, with the download options.
func (m *materializer) extract(ctx context.Context, v *deliver.Verified, rel, layerType string, maxLayer int64) error {
	dst := filepath.Join(m.tmp, filepath.FromSlash(rel))
	m.created = append(m.created, dst)
	// The free-space pre-flight looks at the folder the layer lands in:
	// it must exist.
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	d := m.o.Download
	_, err := v.Extract(ctx, dst, deliver.ExtractOptions{
		LayerMediaType: layerType, Limits: m.o.Limits, MaxLayerSize: maxLayer,
		PartialDir: d.PartialDir, Resumes: d.Resumes, Limiter: d.Limiter, MinFree: d.MinFree,
	})
	return err
}

// helm checks that v is a Helm chart of repository repo (HOST/PATH) at
// version revision (with "_" for "+", as in an OCI tag), extracts its
// chart layer into apps/<app> of the revision through the delivery path,
// and returns the chart folder (apps/<app>/<top>).
func (m *materializer) helm(ctx context.Context, v *deliver.Verified, app, repo, revision string) (string, error) {
	man := v.Manifest
	if man.Config.MediaType != HelmConfigMediaType {
		return "", fmt.Errorf("%w: config media type %q, want %s", ErrNotChart, man.Config.MediaType, HelmConfigMediaType)
	}
	layerType := chartLayerType
	layer, err := oci.SelectLayer(man, chartLayerType)
	if err != nil {
		if layer, err = oci.SelectLayer(man, legacyChartLayerType); err != nil {
			return "", fmt.Errorf("%w: no layer of type %s", ErrNotChart, chartLayerType)
		}
		layerType = legacyChartLayerType
	}
	maxLayer := min(int64(maxChartSize), m.o.MaxArchiveSize)
	if layer.Size > maxLayer || layer.Size < 0 {
		return "", fmt.Errorf("%w: chart layer %s is %d bytes (cap %d)", ErrTooLarge, layer.Digest, layer.Size, maxLayer)
	}
	rel := path.Join("apps", app)
	if err := m.extract(ctx, v, rel, layerType, maxLayer); err != nil {
		return "", fmt.Errorf("chart layer %s: %w", layer.Digest, err)
	}
	top, err := checkChart(filepath.Join(m.tmp, filepath.FromSlash(rel)), path.Base(repo), strings.ReplaceAll(revision, "_", "+"))
	if err != nil {
		return "", err
	}
	return path.Join(rel, top), nil
}

// checkChart checks the extracted chart archive dir: exactly one
// top-level folder, holding a regular Chart.yaml that names chart name at
// version (what the Helm applier checks of a chart it pulls). It returns
// the folder's name.
func checkChart(dir, name, version string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	if len(entries) != 1 || !entries[0].IsDir() {
		return "", fmt.Errorf("%w: the chart archive must hold exactly one top-level folder, it holds %d entries", ErrNotChart, len(entries))
	}
	top := entries[0].Name()
	f, err := os.Open(filepath.Join(dir, top, "Chart.yaml"))
	if err != nil {
		return "", fmt.Errorf("%w: %s/Chart.yaml: %v", ErrNotChart, top, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%w: %s/Chart.yaml is not a regular file", ErrNotChart, top)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxChartFile+1))
	if err != nil || len(raw) > maxChartFile {
		return "", fmt.Errorf("%w: %s/Chart.yaml unreadable or larger than %d bytes: %v", ErrNotChart, top, maxChartFile, err)
	}
	if err := checkChartFile(raw, name, version); err != nil {
		return "", fmt.Errorf("%s/Chart.yaml: %w", top, err)
	}
	return top, nil
}

// checkChartFile checks that the Chart.yaml raw names chart name at
// version.
func checkChartFile(raw []byte, name, version string) error {
	var meta struct {
		Name    string `yaml:"name"`
		Version string `yaml:"version"`
	}
	if err := yaml.Unmarshal(raw, &meta); err != nil {
		return fmt.Errorf("%w: %v", ErrNotChart, err)
	}
	if meta.Name != name || meta.Version != version {
		return fmt.Errorf("%w: the artifact holds chart %q version %q, want %s version %s", ErrNotChart, meta.Name, meta.Version, name, version)
	}
	return nil
}
