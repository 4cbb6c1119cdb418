package bundle

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/source/oci"
)

// maxReported caps the blobs a Verify error names.
const maxReported = 10

// VerifyOptions control Verify.
type VerifyOptions struct {
	// Progress, when set, wraps a reader that counts the bytes checked
	// (size: their total), for a progress display.
	Progress func(r io.Reader, size int64) io.Reader
}

// Verify reads every blob in the bundle and checks it against its digest.
// A mismatch is an error wrapping ErrDigestMismatch naming each altered
// blob and what it belongs to ("layer of image ghcr.io/acme/web:1.2"),
// after every blob has been read.
func (b *Bundle) Verify(ctx context.Context, o VerifyOptions) error {
	ds := make([]digest.Digest, 0, len(b.tar.blobs))
	var total int64
	for d, e := range b.tar.blobs {
		ds = append(ds, d)
		total += e.size
	}
	// In file order: one sequential read of the file.
	slices.SortFunc(ds, func(x, y digest.Digest) int { return cmp.Compare(b.tar.blobs[x].off, b.tar.blobs[y].off) })
	prog := newMeter(o.Progress, total)
	defer prog.done()
	var bad []string
	n := 0
	buf := make([]byte, 1<<20)
	for _, d := range ds {
		if err := ctx.Err(); err != nil {
			return err
		}
		rc, err := b.openBlob(d)
		if err != nil {
			return err
		}
		_, err = io.CopyBuffer(io.Discard, prog.reader(rc), buf)
		rc.Close()
		switch {
		case errors.Is(err, ErrDigestMismatch):
			n++
			if len(bad) < maxReported {
				bad = append(bad, strings.TrimPrefix(err.Error(), ErrDigestMismatch.Error()+": "))
			}
		case err != nil:
			return fmt.Errorf("read blob %s: %w", d, err)
		}
	}
	if n > 0 {
		more := ""
		if n > len(bad) {
			more = fmt.Sprintf(" (and %d more)", n-len(bad))
		}
		return fmt.Errorf("%w: %d of %d blobs altered: %s%s", ErrDigestMismatch, n, len(ds), strings.Join(bad, "; "), more)
	}
	return nil
}

// VerifyAllResult is what VerifyAll found.
type VerifyAllResult struct {
	// Blobs is true once every blob matched its digest.
	Blobs bool
	// Signature is the state's signature that verified.
	Signature *cosign.Result
}

// VerifyAll checks the bundle offline: every blob against its digest
// (Verify), then the state's signature with the policy, read from the
// bundle as a registry would read it (deliver.Remote.Verify through
// Remote).
func (b *Bundle) VerifyAll(ctx context.Context, p cosign.Policy, o VerifyOptions) (VerifyAllResult, error) {
	var res VerifyAllResult
	if err := b.Verify(ctx, o); err != nil {
		return res, fmt.Errorf("%s: %w", b.path, err)
	}
	res.Blobs = true
	r, root, err := b.Remote(oci.Options{})
	if err != nil {
		return res, fmt.Errorf("%s: %w", b.path, err)
	}
	v, err := r.Verify(ctx, root, p)
	if err != nil {
		return res, fmt.Errorf("verify %s in %s: %w", root, b.path, err)
	}
	res.Signature = v.Signature
	return res, nil
}
