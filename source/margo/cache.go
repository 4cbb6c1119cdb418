package margo

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/source/margo/spec"
)

// contentCache keeps verified ApplicationDeployment YAMLs and desired
// state manifests on disk by digest, so that a poll fetches only what
// changed, also across restarts. Files are written atomically (temporary
// file, sync, rename, sync of the folder) and re-verified against their
// digest on every read: a file that does not hash to its name (torn by a
// crash of the file system, truncated, altered) is removed and reported
// absent, so that the caller fetches it again; it is never used.
type contentCache struct {
	dir string
}

func (c *contentCache) path(digest string) string {
	return filepath.Join(c.dir, strings.Replace(digest, ":", "-", 1)+".yaml")
}

// get returns the cached bytes of digest, re-verified; ok false when they
// are absent or damaged (a damaged file is removed).
func (c *contentCache) get(digest string) ([]byte, bool) {
	p := c.path(digest)
	f, err := os.Open(p)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, spec.MaxDeploymentSize+1))
	if err != nil || len(data) > spec.MaxDeploymentSize || sha(data) != digest {
		os.Remove(p)
		return nil, false
	}
	return data, true
}

// put stores verified bytes under their digest.
func (c *contentCache) put(digest string, data []byte) error {
	return writeAtomic(c.path(digest), data, 0o600)
}

// prune removes the cached YAMLs whose digest is not in keep.
func (c *contentCache) prune(keep map[string]bool) error {
	entries, err := os.ReadDir(c.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		d := strings.Replace(strings.TrimSuffix(name, ".yaml"), "-", ":", 1)
		if strings.HasSuffix(name, ".yaml") && spec.ValidDigest(d) && keep[d] {
			continue
		}
		if m := strings.Replace(strings.TrimSuffix(name, ".json"), "-", ":", 1); strings.HasSuffix(name, ".json") && keep[m] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(c.dir, name)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func sha(data []byte) string {
	s := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(s[:])
}

// verifiedBody streams r into a temporary file of dir through a size cap
// and a sha256, and checks the digest. It returns the file (positioned at
// its start; the caller closes and removes it) only when the bytes are
// exactly what want names.
func verifiedBody(r io.Reader, dir, what, want string, maxSize int64) (*os.File, int64, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, 0, err
	}
	f, err := os.CreateTemp(dir, ".download-*")
	if err != nil {
		return nil, 0, err
	}
	fail := func(err error) (*os.File, int64, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, 0, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, maxSize+1))
	if err != nil {
		return fail(fmt.Errorf("read %s: %w", what, err))
	}
	if n > maxSize {
		return fail(fmt.Errorf("%w: %s is larger than %d bytes", ErrTooLarge, what, maxSize))
	}
	if got := digestOf(h); got != want {
		return fail(fmt.Errorf("%w: %s has digest %s, the manifest says %s: update aborted, the device keeps its current state", ErrDigestMismatch, what, got, want))
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fail(err)
	}
	return f, n, nil
}

func digestOf(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

func (c *contentCache) manifestPath(digest string) string {
	return filepath.Join(c.dir, strings.Replace(digest, ":", "-", 1)+".json")
}

// putManifest keeps a verified manifest body under its digest.
func (c *contentCache) putManifest(digest string, raw []byte) error {
	return writeAtomic(c.manifestPath(digest), raw, 0o600)
}

// getManifest returns the manifest body of digest, re-verified; ok false
// when it is absent or damaged (a damaged file is removed).
func (c *contentCache) getManifest(digest string) ([]byte, bool) {
	p := c.manifestPath(digest)
	f, err := os.Open(p)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, spec.MaxManifestSize+1))
	if err != nil || len(data) > spec.MaxManifestSize || sha(data) != digest {
		os.Remove(p)
		return nil, false
	}
	return data, true
}
