package materialize

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/source/deliver"
)

// compose checks that v is a Compose Archive and extracts its layer into
// apps/<app> of the revision through the delivery path (the layer streamed
// through a size cap and a digest check, the folder appearing only once
// every byte was checked), and returns the project folder
// (apps/<app>/<top>).
func (m *materializer) compose(ctx context.Context, v *deliver.Verified, app string) (string, error) {
	man := v.Manifest
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
	rel := path.Join("apps", app)
	if err := m.extract(ctx, v, rel, ComposeLayerType, m.o.MaxArchiveSize); err != nil {
		return "", fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	top, err := checkLayout(filepath.Join(m.tmp, filepath.FromSlash(rel)))
	if err != nil {
		return "", err
	}
	return path.Join(rel, top), nil
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

// carry copies the folders of a deployment's Compose apps from the
// revision folder from (the previous one) into the new revision.
func (m *materializer) carry(from string, d PlanDeployment) error {
	for _, c := range d.Components {
		m.names[c.App] = true
		if c.Path == "" {
			continue
		}
		appDir := path.Join("apps", c.App)
		src := filepath.Join(from, filepath.FromSlash(appDir))
		dst := filepath.Join(m.tmp, filepath.FromSlash(appDir))
		if err := copyTree(src, dst); err != nil {
			return fmt.Errorf("copy app %s of deployment %s from %s: %w", c.App, d.ID, from, err)
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
