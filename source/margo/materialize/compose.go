package materialize

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/source/archive"
)

// compose fetches, verifies and extracts the Compose Archive desc of repo
// into apps/<app> of the revision, and returns the project folder
// (apps/<app>/<top>).
func (m *materializer) compose(ctx context.Context, repo string, desc ocispec.Descriptor, app string) (string, error) {
	man, err := m.o.Fetcher.Manifest(ctx, repo, desc)
	if err != nil {
		return "", fmt.Errorf("fetch manifest: %w", err)
	}
	at := man.ArtifactType
	if at == "" {
		at = man.Config.MediaType
	}
	if at != ComposeArtifactType {
		return "", fmt.Errorf("%w: artifact type %q, want %s (publish it with berth margo compose-archive; docker compose publish output is not consumable)", ErrNotCompose, at, ComposeArtifactType)
	}
	if len(man.Layers) != 1 || man.Layers[0].MediaType != ComposeLayerType {
		var types []string
		for _, l := range man.Layers {
			types = append(types, l.MediaType)
		}
		return "", fmt.Errorf("%w: want exactly one layer of type %s, got [%s]", ErrNotCompose, ComposeLayerType, strings.Join(types, ", "))
	}
	layer := man.Layers[0]
	if layer.Size > m.o.MaxArchiveSize || layer.Size < 0 {
		return "", fmt.Errorf("%w: layer %s is %d bytes (cap %d)", ErrTooLarge, layer.Digest, layer.Size, m.o.MaxArchiveSize)
	}
	if err := layer.Digest.Validate(); err != nil {
		return "", fmt.Errorf("%w: layer digest %q: %v", ErrDigestMismatch, layer.Digest, err)
	}
	// Verify the whole layer before extracting anything.
	f, err := m.download(ctx, repo, layer)
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	rel := path.Join("apps", app)
	dst := filepath.Join(m.tmp, filepath.FromSlash(rel))
	m.created = append(m.created, dst)
	if _, err := archive.ExtractAtomic(ctx, f, dst, m.o.Limits); err != nil {
		return "", fmt.Errorf("extract layer %s: %w", layer.Digest, err)
	}
	top, err := checkLayout(dst)
	if err != nil {
		return "", err
	}
	return path.Join(rel, top), nil
}

// download copies the layer into a temporary file through a size cap and
// a digest check.
func (m *materializer) download(ctx context.Context, repo string, layer ocispec.Descriptor) (*os.File, error) {
	rc, err := m.o.Fetcher.Blob(ctx, repo, layer)
	if err != nil {
		return nil, fmt.Errorf("fetch layer %s: %w", layer.Digest, err)
	}
	defer rc.Close()
	f, err := os.CreateTemp(m.tmp, ".layer-*")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*os.File, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(rc, layer.Size+1))
	if err != nil {
		return fail(fmt.Errorf("fetch layer %s: %w", layer.Digest, err))
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); n != layer.Size || got != layer.Digest.String() {
		return fail(fmt.Errorf("%w: layer %s: got %d bytes hashing to %s", ErrDigestMismatch, layer.Digest, n, got))
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fail(err)
	}
	return f, nil
}

// checkLayout checks the extracted archive dir: exactly one top-level
// entry, a folder, holding a regular compose.yaml, and no symlink whose
// target leaves that folder. It returns the folder's name.
func checkLayout(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	if len(entries) != 1 || !entries[0].IsDir() {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return "", fmt.Errorf("%w: the archive must hold exactly one top-level folder, it holds [%s]", ErrArchiveLayout, strings.Join(names, ", "))
	}
	top := entries[0].Name()
	topDir := filepath.Join(dir, top)
	if fi, err := os.Lstat(filepath.Join(topDir, "compose.yaml")); err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%w: %s/compose.yaml is missing or not a regular file (compose.yml and docker-compose.yaml are not accepted)", ErrArchiveLayout, top)
	}
	err = filepath.WalkDir(topDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink == 0 {
			return err
		}
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		resolved := filepath.Join(filepath.Dir(p), target)
		if r, err := filepath.Rel(topDir, resolved); err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) || filepath.IsAbs(target) {
			rel, _ := filepath.Rel(dir, p)
			return fmt.Errorf("%w: symlink %s -> %s leaves the folder %s", ErrArchiveLayout, rel, target, top)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return top, nil
}

// carry copies the folders of a previous deployment's Compose apps into
// the new revision.
func (m *materializer) carry(d PlanDeployment) error {
	for _, c := range d.Components {
		m.names[c.App] = true
		if c.Path == "" {
			continue
		}
		appDir := path.Join("apps", c.App)
		src := filepath.Join(m.o.PreviousDir, filepath.FromSlash(appDir))
		dst := filepath.Join(m.tmp, filepath.FromSlash(appDir))
		if err := copyTree(src, dst); err != nil {
			return fmt.Errorf("keep app %s of deployment %s from the previous revision: %w", c.App, d.ID, err)
		}
	}
	return nil
}

// copyTree copies a folder berth extracted itself (regular files, folders
// and symlinks).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(out, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(t, out)
		case d.Type().IsRegular():
			in, err := os.Open(p)
			if err != nil {
				return err
			}
			defer in.Close()
			o, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
			if err != nil {
				return err
			}
			_, err = io.Copy(o, in)
			if cerr := o.Close(); err == nil {
				err = cerr
			}
			return err
		}
		return fmt.Errorf("%s is not a file, folder or symlink", p)
	})
}

// syncTree syncs the files and folders of dir.
func syncTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink != 0 {
			return err
		}
		if !d.IsDir() && strings.HasPrefix(d.Name(), ".layer-") {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
}

func syncDir(dir string) {
	if f, err := os.Open(dir); err == nil {
		f.Sync()
		f.Close()
	}
}
