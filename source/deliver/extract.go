// Package fetch pulls an artifact by digest and extracts it safely: the
// layer is streamed from the registry through a digest-verifying, size-capped
// reader straight into the extractor, and the result is switched in with a
// rename only once every byte has been checked.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/oci"
)

// Options control a pull.
type Options struct {
	// LayerMediaType picks the layer; empty means the Flux content layer,
	// else the only tar+gzip layer.
	LayerMediaType string
	// Limits cap the extracted content.
	Limits archive.Limits
	// MaxLayerSize caps the compressed layer; 0 means Limits.MaxSize or the
	// archive default.
	MaxLayerSize int64
	// Progress, when set, wraps the layer download reader.
	Progress func(r io.Reader, size int64) io.Reader
	// Endpoints, when set, are the repositories the layer is fetched from,
	// tried in order (registry mirrors of ref's repository, and ref's
	// own): the first that opens the blob serves all of it. An endpoint
	// that cannot open it (not found, unreachable, refused credentials)
	// passes to the next; once bytes flow, any error ends the pull, and a
	// blob refused for its content (digest or size) is never fetched
	// again elsewhere. Empty: ref's repository alone.
	Endpoints []oci.Reference
}

// Result describes what was extracted.
type Result struct {
	Ref         oci.Reference     `json:"-"`
	URL         string            `json:"url"`
	Digest      string            `json:"digest"`
	Layer       string            `json:"layer"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Files       int               `json:"files"`
	Size        int64             `json:"size"`
	Dir         string            `json:"dir"`
	// Endpoint is the index in Options.Endpoints of the repository that
	// served the layer (0 without Endpoints).
	Endpoint int `json:"-"`
}

// Pull fetches the artifact ref names (ref must carry a digest: resolve a
// tag once, verify that digest, then pull it) and extracts its layer into
// dir, which must not exist. On any error dir does not exist afterwards.
func Pull(ctx context.Context, c *oci.Client, ref oci.Reference, dir string, o Options) (*Result, error) {
	if ref.Digest == "" {
		return nil, fmt.Errorf("%w %s: pull by digest (resolve the tag first)", oci.ErrInvalidReference, ref)
	}
	_, m, err := c.Manifest(ctx, ref)
	if err != nil {
		return nil, err
	}
	return Extract(ctx, c, ref, m, dir, o)
}

// Extract is Pull for a caller that already fetched (and checked) the
// manifest of ref.
func Extract(ctx context.Context, c *oci.Client, ref oci.Reference, m *ocispec.Manifest, dir string, o Options) (*Result, error) {
	layer, err := oci.SelectLayer(m, o.LayerMediaType)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	maxLayer := o.MaxLayerSize
	if maxLayer == 0 {
		maxLayer = o.Limits.MaxSize
	}
	rc, served, err := openBlob(ctx, c, ref, layer, maxLayer, o.Endpoints)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	// Receiving and hashing the blob run beside decompressing and writing
	// it: two stages on two cores instead of one after the other.
	pr, pw := io.Pipe()
	go func() {
		_, err := io.CopyBuffer(pw, rc, make([]byte, 1<<20))
		pw.CloseWithError(err)
	}()
	defer pr.Close() // stops the copy when extraction ends early
	var r io.Reader = pr
	if o.Progress != nil {
		r = o.Progress(r, layer.Size)
	}
	res, err := archive.ExtractAtomic(ctx, r, dir, o.Limits)
	if err != nil {
		// Bytes that fail to parse are often bytes that were altered: read
		// the rest of the (size-capped) blob so that the report says so.
		if _, derr := io.Copy(io.Discard, pr); errors.Is(derr, oci.ErrDigestMismatch) {
			err = derr
		}
		return nil, fmt.Errorf("extract %s into %s: %w", ref, dir, err)
	}
	return &Result{
		Ref:         ref,
		URL:         ref.String(),
		Digest:      ref.Digest,
		Layer:       layer.Digest.String(),
		Annotations: m.Annotations,
		Files:       res.Files,
		Size:        res.Size,
		Dir:         dir,
		Endpoint:    served,
	}, nil
}

// openBlob opens the layer on the first endpoint that serves it (see
// Options.Endpoints) and returns the endpoint's index.
func openBlob(ctx context.Context, c *oci.Client, ref oci.Reference, layer ocispec.Descriptor, maxSize int64, eps []oci.Reference) (io.ReadCloser, int, error) {
	if len(eps) == 0 {
		rc, err := c.OpenBlob(ctx, ref, layer, maxSize)
		return rc, 0, err
	}
	var errs []error
	for i, ep := range eps {
		rc, err := c.OpenBlob(ctx, ep, layer, maxSize)
		if err == nil {
			return rc, i, nil
		}
		if errors.Is(err, oci.ErrTooLarge) || errors.Is(err, oci.ErrDigestMismatch) || ctx.Err() != nil {
			return nil, i, err
		}
		errs = append(errs, fmt.Errorf("[%s] %w", ep.Repo(), err))
	}
	if len(errs) == 1 {
		return nil, 0, errors.Unwrap(errs[0])
	}
	return nil, 0, fmt.Errorf("layer %s of %s: no registry served it; tried in order: %w", layer.Digest, ref, joined(errs))
}

// joined is errors.Join on one line.
type joined []error

func (e joined) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e joined) Unwrap() []error { return e }
