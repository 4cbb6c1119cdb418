package deliver

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/time/rate"

	"github.com/berth-dev/berth/internal/failpoint"
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
	// PartialDir, Resumes and Limiter make the layer download survive bad
	// links and restarts and cap its rate: see oci.BlobOptions.
	PartialDir string
	Resumes    int
	Limiter    *rate.Limiter
	// MinFree is the free space the pull must leave on the file system of
	// the target folder: a pull that would leave less is not started
	// (ErrNoSpace). The zero value checks nothing.
	MinFree MinFree
}

// MinFree is an amount of free disk space: Bytes, or Percent of the file
// system's size, the smaller of the two when both are set.
type MinFree struct {
	Bytes   int64
	Percent float64
}

// of is the free space to leave on a file system of total bytes; 0: no
// check.
func (m MinFree) of(total uint64) uint64 {
	var amounts []uint64
	if m.Bytes > 0 {
		amounts = append(amounts, uint64(m.Bytes))
	}
	if m.Percent > 0 {
		amounts = append(amounts, uint64(float64(total)*m.Percent/100))
	}
	if len(amounts) == 0 {
		return 0
	}
	return slices.Min(amounts)
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
// credentials) passes to the next; once bytes flow, a transport failure
// the endpoint cannot resume (see ExtractOptions.Resumes), or an endpoint
// serving far too slowly, goes on from the next endpoints where it stopped
// (oci.BlobOptions.Mirrors), and a blob refused for its content (digest or
// size) is never fetched again elsewhere. On any error dir does not exist
// afterwards.
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
	if err := preflight(filepath.Dir(dir), layer.Size, o); err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	what := fmt.Sprintf("layer %s of %s", layer.Digest, ref)
	mo := v.remote.options(what)
	mo.Timeout = 0 // the stream is read after the open returns: ctx bounds it
	bo := oci.BlobOptions{MaxSize: maxLayer, Resumes: o.Resumes, PartialDir: o.PartialDir, Limiter: o.Limiter}
	bo.SlowWindow, bo.SlowRate = slowRule(ctx, len(v.eps), o.Limiter)
	rc, served, err := mirror.Try(ctx, v.eps, mo, func(ctx context.Context, ep mirror.Endpoint) (io.ReadCloser, error) {
		bo := bo
		bo.Mirrors = v.after(ep) // a download cut off here goes on from the next
		return c.FetchBlob(ctx, v.refs[ep.Ref], layer, bo)
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
	failpoint.Hit("fetch.extract")
	res, err := archive.ExtractAtomic(ctx, r, dir, o.Limits)
	if err != nil {
		// Bytes that fail to parse are often bytes that were altered or
		// cut short: read the rest of the (size-capped) blob so that the
		// report says which. The archive's verdict stands only for a blob
		// that arrived whole and verified.
		if _, derr := io.Copy(io.Discard, pr); derr != nil {
			err = derr
		}
		return nil, fmt.Errorf("extract %s into %s: %w", ref, dir, err)
	}
	if m, ok := rc.(interface{ Served() int }); ok {
		served += m.Served() // the download went on from a later endpoint
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

// after returns the repositories of the endpoints after ep, in order.
func (v *Verified) after(ep mirror.Endpoint) []oci.Reference {
	var out []oci.Reference
	for i, e := range v.eps {
		if e.Ref == ep.Ref {
			for _, next := range v.eps[i+1:] {
				out = append(out, v.refs[next.Ref])
			}
			break
		}
	}
	return out
}

// Leaving a slow endpoint: an endpoint that serves the layer slower than
// slowRate over a window is left for the next one (the download goes on
// there where it stopped), so that a degraded mirror does not hold the
// pull until its deadline. The window is the pull's time shared among its
// endpoints, at most maxSlowWindow.
const (
	slowRate      = 16 << 10
	maxSlowWindow = 10 * time.Second
)

// slowRule returns the SlowWindow and SlowRate of a pull from n endpoints
// under ctx; zero (no rule) with one endpoint, without a deadline, or when
// the rate cap is below twice slowRate (the cap, not the endpoint, would
// be slow).
func slowRule(ctx context.Context, n int, lim *rate.Limiter) (time.Duration, int64) {
	deadline, ok := ctx.Deadline()
	if n < 2 || !ok || (lim != nil && float64(lim.Limit()) < 2*slowRate) {
		return 0, 0
	}
	return min(maxSlowWindow, time.Until(deadline)/time.Duration(2*n)), slowRate
}

// preflight refuses to start a pull that would leave less than o.MinFree
// on the file system of dir: the layer is extracted there (at least its
// size) and, with a partial folder, kept there while it downloads.
func preflight(dir string, size int64, o ExtractOptions) error {
	total, avail, ok := diskSpace(dir)
	if !ok {
		return nil
	}
	keep := o.MinFree.of(total)
	if keep == 0 {
		return nil
	}
	need := uint64(max(size, 0))
	if o.PartialDir != "" {
		need *= 2
	}
	if avail < need || avail-need < keep {
		return fmt.Errorf("%w on %s: the layer is %s, %s free, and at least %s must stay free (minFreeSpace): free some space or lower minFreeSpace",
			ErrNoSpace, dir, human(uint64(max(size, 0))), human(avail), human(keep))
	}
	return nil
}

// human renders a byte count with a binary unit.
func human(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
