package archive

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"slices"
)

// DiffOptions configures [Diff].
type DiffOptions struct {
	// Build selects the folder content, exactly as for [Build].
	Build BuildOptions
	// Limits bounds the reading of the archive, as for [Extract].
	Limits Limits
}

// Changes lists the differences between a folder and an archive, each a
// sorted list of slash-separated relative paths of files and symlinks.
// Directories never appear by themselves.
type Changes struct {
	// Added are in the folder but not in the archive.
	Added []string `json:"added"`
	// Removed are in the archive but not in the folder.
	Removed []string `json:"removed"`
	// Modified are in both with a different content, mode (executable or
	// not), symlink target, or type (file or symlink).
	Modified []string `json:"modified"`
}

// signature is what Diff compares for a file or symlink.
type signature struct {
	kind   kind
	mode   int64
	target string
	sum    [sha256.Size]byte
}

// Diff compares the tree that [Build] would archive for dir with
// opts.Build (same ignore rules and overlay) with the entries of the
// untrusted tar or tar+gzip stream r. The archive is read with the checks
// and limits of [Extract], file contents are hashed with SHA-256 as they
// stream, and nothing is written to disk.
func Diff(ctx context.Context, dir string, r io.Reader, opts DiffOptions) (Changes, error) {
	var ch Changes
	local, err := folderSignatures(ctx, dir, opts.Build)
	if err != nil {
		return ch, err
	}
	remote, err := archiveSignatures(ctx, r, opts.Limits)
	if err != nil {
		return ch, err
	}
	for name, l := range local {
		a, ok := remote[name]
		switch {
		case !ok:
			ch.Added = append(ch.Added, name)
		case a != l:
			ch.Modified = append(ch.Modified, name)
		}
	}
	for name := range remote {
		if _, ok := local[name]; !ok {
			ch.Removed = append(ch.Removed, name)
		}
	}
	slices.Sort(ch.Added)
	slices.Sort(ch.Removed)
	slices.Sort(ch.Modified)
	return ch, nil
}

func folderSignatures(ctx context.Context, dir string, opts BuildOptions) (map[string]signature, error) {
	t, err := openTree(ctx, dir, opts)
	if err != nil {
		return nil, fmt.Errorf("reading %q: %w", dir, err)
	}
	defer t.close()
	sigs := make(map[string]signature)
	for i := range t.entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e := &t.entries[i]
		switch e.kind {
		case kindSymlink:
			sigs[e.name] = signature{kind: kindSymlink, target: e.target}
		case kindFile:
			rc, err := t.open(e)
			if err != nil {
				return nil, fmt.Errorf("reading %q: %w", dir, err)
			}
			sum, err := hashReader(rc)
			rc.Close()
			if err != nil {
				return nil, fmt.Errorf("reading %q: path %q: %w", dir, e.name, err)
			}
			sigs[e.name] = signature{kind: kindFile, mode: e.mode, sum: sum}
		}
	}
	return sigs, nil
}

func archiveSignatures(ctx context.Context, r io.Reader, lim Limits) (map[string]signature, error) {
	rd, err := newReader(ctx, r, lim)
	if err != nil {
		return nil, err
	}
	defer rd.close()
	sigs := make(map[string]signature)
	for {
		it, err := rd.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch it.kind {
		case kindSymlink:
			sigs[it.name] = signature{kind: kindSymlink, target: it.target}
		case kindFile:
			sum, err := hashReader(it.body)
			if err != nil {
				return nil, err
			}
			sigs[it.name] = signature{kind: kindFile, mode: it.mode, sum: sum}
		}
	}
	if err := rd.finish(); err != nil {
		return nil, err
	}
	return sigs, nil
}

func hashReader(r io.Reader) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return sum, err
	}
	h.Sum(sum[:0])
	return sum, nil
}
