package archive

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"time"
)

// epoch is the modification time of every entry Build writes.
var epoch = time.Unix(0, 0)

// BuildResult describes an archive written by [Build].
type BuildResult struct {
	// Files is the number of regular files and symlinks in the archive.
	Files int
	// Size is the total size in bytes of the regular files' contents.
	Size int64
	// Digest is "sha256:<hex>" of the compressed stream written.
	Digest string
}

// Build writes a reproducible tar+gzip archive of the folder dir to w (see
// the package documentation for the exact format).
//
// It leaves out every ".git" file or folder at any depth, the paths matched
// by the gitignore-syntax patterns of dir/.berthignore and opts.Ignore (as in
// git, a path below an ignored folder cannot be re-included with "!"), and
// adds opts.Overlay. Symlinks are kept when their target stays inside dir,
// both lexically and when resolved through the file system; any other
// symlink, and any device, fifo or socket, is an error naming it. ctx is
// checked between entries.
//
// On error, w may have received a partial stream.
func Build(ctx context.Context, dir string, w io.Writer, opts BuildOptions) (BuildResult, error) {
	t, err := openTree(ctx, dir, opts)
	if err != nil {
		return BuildResult{}, fmt.Errorf("archiving %q: %w", dir, err)
	}
	defer t.close()

	var res BuildResult
	h := sha256.New()
	gz, err := gzip.NewWriterLevel(io.MultiWriter(w, h), gzip.BestCompression)
	if err != nil {
		return res, err
	}
	tw := tar.NewWriter(gz)
	var total int64
	for i := range t.entries {
		if t.entries[i].kind == kindFile {
			total += t.entries[i].size
		}
	}
	for i := range t.entries {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		e := &t.entries[i]
		if err := writeEntry(t, tw, e); err != nil {
			return res, fmt.Errorf("archiving %q: %w", dir, err)
		}
		switch e.kind {
		case kindFile:
			res.Files++
			res.Size += e.size
			if opts.Progress != nil {
				opts.Progress(res.Size, total)
			}
		case kindSymlink:
			res.Files++
		}
	}
	if err := tw.Close(); err != nil {
		return res, err
	}
	if err := gz.Close(); err != nil {
		return res, err
	}
	res.Digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	return res, nil
}

// header returns the normalised tar header of e.
func header(e *entry) *tar.Header {
	hdr := &tar.Header{
		Name:    e.tarName(),
		Mode:    e.mode,
		ModTime: epoch,
		Format:  tar.FormatPAX,
	}
	switch e.kind {
	case kindDir:
		hdr.Typeflag = tar.TypeDir
	case kindFile:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = e.size
	case kindSymlink:
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = e.target
	}
	return hdr
}

func writeEntry(t *tree, tw *tar.Writer, e *entry) error {
	if err := tw.WriteHeader(header(e)); err != nil {
		return fmt.Errorf("path %q: %w", e.name, err)
	}
	if e.kind != kindFile {
		return nil
	}
	rc, err := t.open(e)
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := io.Copy(tw, rc); err != nil {
		return fmt.Errorf("path %q: %w", e.name, err)
	}
	return nil
}
