package dist

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// CACertificates is where the image's CA bundle comes from: the build
// machine's (Debian's ca-certificates).
const CACertificates = "/etc/ssl/certs/ca-certificates.crt"

// Image paths.
const (
	ImageAgent  = "/usr/bin/berth-agent"
	ImageBerth  = "/usr/bin/berth"
	ImageConfig = "/etc/berth/agent.yaml"
	ImageState  = "/var/lib/berth"
)

// Image builds the agent's image for each of bins, FROM scratch: the two
// binaries, the CA bundle, /etc/berth and the state folder /var/lib/berth
// (a volume). It runs berth-agent --config /etc/berth/agent.yaml as root
// (the Compose applier needs the Docker socket mounted in). The result is
// an OCI index with one manifest per platform.
func Image(bins []Binaries, version string) (v1.ImageIndex, error) {
	ca, err := os.ReadFile(CACertificates)
	if err != nil {
		return nil, fmt.Errorf("%w: %v: install ca-certificates", ErrMissing, err)
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, b := range bins {
		img, err := platformImage(b, ca, version)
		if err != nil {
			return nil, fmt.Errorf("image for %s: %w", b.Platform, err)
		}
		p := b.Platform
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: p.OS, Architecture: p.Arch, Variant: p.Variant}},
		})
	}
	return idx, nil
}

func platformImage(b Binaries, ca []byte, version string) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := []struct {
		name string
		mode int64
	}{{"etc/", 0o755}, {"etc/berth/", 0o700}, {"etc/ssl/", 0o755}, {"etc/ssl/certs/", 0o755}, {"tmp/", 0o1777}, {"usr/", 0o755}, {"usr/bin/", 0o755}, {"var/", 0o755}, {"var/lib/", 0o755}, {"var/lib/berth/", 0o700}}
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d.name, Mode: d.mode, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct {
		name, src string
		data      []byte
		mode      int64
	}{
		{"etc/ssl/certs/ca-certificates.crt", "", ca, 0o644},
		{"usr/bin/berth", b.Berth, nil, 0o755},
		{"usr/bin/berth-agent", b.Agent, nil, 0o755},
	} {
		data := f.data
		if f.src != "" {
			var err error
			if data, err = os.ReadFile(f.src); err != nil {
				return nil, err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(data)), ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	p := b.Platform
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Arch, p.Variant
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = []string{ImageAgent}
	cf.Config.Cmd = []string{"--config", ImageConfig}
	cf.Config.Env = []string{"PATH=/usr/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
	cf.Config.Volumes = map[string]struct{}{ImageState: {}}
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":   "berth-agent",
		"org.opencontainers.image.version": version,
		"org.opencontainers.image.source":  "https://github.com/berth-dev/berth",
	}
	return mutate.ConfigFile(img, cf)
}

// WriteLayout writes idx as an OCI image layout in dir.
func WriteLayout(dir string, idx v1.ImageIndex) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	_, err := layout.Write(dir, idx)
	return err
}

// Push pushes idx to ref (HOST/REPO:TAG) with opts; plainHTTP speaks
// HTTP to any registry (loopback ones always may).
func Push(ctx context.Context, ref string, idx v1.ImageIndex, plainHTTP bool, opts ...remote.Option) error {
	var nopts []name.Option
	if plainHTTP {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return err
	}
	return remote.WriteIndex(r, idx, append(opts, remote.WithContext(ctx))...)
}
