package deliver

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/mirror"
	"github.com/berth-dev/berth/source/oci"
)

// ExtractOptions control an extraction.
type ExtractOptions struct {
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
	// Via is the endpoint that served the layer.
	Via mirror.Endpoint `json:"-"`
	// Signature is the signature that verified; nil when unverified.
	Signature *cosign.Result `json:"-"`
}

// Extract streams the artifact's layer into dir, which must not exist. The
// layer is opened on the first endpoint that serves it (the manifest's
// first): an endpoint that cannot open it (not found, unreachable, refused
// credentials) passes to the next; once bytes flow, any error ends the
// extraction, and a blob refused for its content (digest or size) is never
// fetched again elsewhere. On any error dir does not exist afterwards.
func (v *Verified) Extract(ctx context.Context, dir string, o ExtractOptions) (*Result, error) {
	ref, c := v.Ref, v.remote.Client
	layer, err := oci.SelectLayer(v.Manifest, o.LayerMediaType)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	maxLayer := o.MaxLayerSize
	if maxLayer == 0 {
		maxLayer = o.Limits.MaxSize
	}
	what := fmt.Sprintf("layer %s of %s", layer.Digest, ref)
	mo := v.remote.options(what)
	mo.Timeout = 0 // the stream is read after the open returns: ctx bounds it
	rc, served, err := mirror.Try(ctx, v.eps, mo, func(ctx context.Context, ep mirror.Endpoint) (io.ReadCloser, error) {
		return c.OpenBlob(ctx, v.refs[ep.Ref], layer, maxLayer)
	})
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
		Annotations: v.Manifest.Annotations,
		Files:       res.Files,
		Size:        res.Size,
		Dir:         dir,
		Via:         v.eps[served],
		Signature:   v.Signature,
	}, nil
}
