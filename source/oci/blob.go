package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/time/rate"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/berth-dev/berth/internal/failpoint"
)

// BlobOptions control FetchBlob.
type BlobOptions struct {
	// MaxSize refuses a blob whose descriptor is larger, before any byte
	// is fetched (ErrTooLarge). 0: no cap.
	MaxSize int64
	// Resumes is how many times in a row a download cut off by a
	// transport failure (a reset, a truncated body) is resumed within the
	// call with an HTTP Range request from the byte it stopped at, after a
	// short pause. A connection that brings 64 KiB or more starts the count
	// again.
	// 0: the first failure ends the read.
	Resumes int
	// PartialDir, when set, keeps what a download received in that folder
	// (sha256-<hex>.part, and its SHA-256 state in sha256-<hex>.state,
	// saved every few MiB or seconds with the bytes synced first), so that
	// a download cut off for good (the read failed, its context ended, the
	// process was killed) resumes where it stopped at the next FetchBlob of
	// the same blob, from any endpoint. A partial blob is hashed again and
	// checked against its saved state before its bytes are used, and
	// discarded when it does not match; the whole blob is verified at the
	// end as always, and its partial removed then. Only sha256 blobs are
	// kept. CleanPartials removes what can no longer be resumed.
	PartialDir string
	// Limiter, when set, caps the rate of the bytes read from the network
	// (a metered link); the bytes of a partial blob are not counted.
	Limiter *rate.Limiter
	// Mirrors are other repositories holding the same blob (registry
	// mirrors of ref's, or ref's own for a mirror), in order: a download
	// that ref cannot finish (its resumes spent) resumes from the first,
	// with its own resumes, and so on. The blob is the same bytes wherever
	// it is stored, so the stream goes on where it stopped.
	Mirrors []Reference
	// SlowWindow and SlowRate let a download leave a repository that
	// serves it too slowly while Mirrors remain: a connection that brought
	// fewer than SlowRate bytes a second over a SlowWindow (nothing at all
	// included) is closed, and the download goes on from the next mirror.
	// 0: only failures move it.
	SlowWindow time.Duration
	SlowRate   int64
}

// Checkpoints of a partial download: every checkpointBytes received, or
// checkpointEvery when bytes came since the last one.
const (
	checkpointBytes = 8 << 20
	checkpointEvery = 2 * time.Second
	// resumePause is the pause before a resume, times the resumes in a row.
	resumePause = 200 * time.Millisecond
	// resumeProgress is what a connection must bring for the resumes in a
	// row to count from zero again: a link that keeps failing after a few
	// bytes each time is given up on.
	resumeProgress = 64 << 10
)

// OpenBlob is FetchBlob(ctx, ref, desc, BlobOptions{MaxSize: maxSize}).
func (c *Client) OpenBlob(ctx context.Context, ref Reference, desc ocispec.Descriptor, maxSize int64) (io.ReadCloser, error) {
	return c.FetchBlob(ctx, ref, desc, BlobOptions{MaxSize: maxSize})
}

// FetchBlob streams the blob desc names from ref's repository. The reader
// returns exactly desc.Size bytes and then, instead of io.EOF, fails with
// ErrDigestMismatch unless they hash to desc.Digest; nothing is buffered.
// Failures are classified truthfully: only content that arrived whole and
// hashes wrong, or is over MaxSize, is refused (ErrDigestMismatch,
// ErrTooLarge); a body cut short is ErrTruncated and a reset or a timeout
// is returned wrapped, both transport failures. A failure to reach the
// blob at all (not found, unauthorized, unreachable) is returned by
// FetchBlob itself, so that a caller can try another endpoint. See
// BlobOptions for resuming downloads and capping their rate.
func (c *Client) FetchBlob(ctx context.Context, ref Reference, desc ocispec.Descriptor, o BlobOptions) (io.ReadCloser, error) {
	if o.MaxSize > 0 && desc.Size > o.MaxSize {
		return nil, fmt.Errorf("%w: blob %s is %d bytes (cap %d)", ErrTooLarge, desc.Digest, desc.Size, o.MaxSize)
	}
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%w: blob %q: %v", ErrDigestMismatch, desc.Digest, err)
	}
	if desc.Size < 0 {
		return nil, fmt.Errorf("%w: blob %s: negative size %d", ErrDigestMismatch, desc.Digest, desc.Size)
	}
	if _, err := c.repository(ref); err != nil {
		return nil, err
	}
	for _, m := range o.Mirrors {
		if _, err := c.repository(m); err != nil {
			return nil, err
		}
	}
	r := &blobReader{
		c:    c,
		desc: desc,
		o:    o,
		hash: desc.Digest.Algorithm().Hash(),
	}
	r.ctx = ctx
	r.at(ref)
	if o.PartialDir != "" && desc.Digest.Algorithm() == digest.SHA256 {
		r.part = openPartial(o.PartialDir, desc)
		if r.part != nil {
			r.hash, r.got = r.part.hash, r.part.offset
			r.replayEnd, r.saved = r.got, r.got
		}
	}
	if r.got < desc.Size {
		if err := r.connect(); err != nil {
			r.part.close()
			return nil, err
		}
	}
	return r, nil
}

// blobReader reads a blob: first the bytes of its partial download, if
// any, then the rest from the registry, resuming after transport failures.
type blobReader struct {
	ctx     context.Context
	rctx    context.Context // ctx with the repository's auth scope
	c       *Client
	url     string
	repo    string
	mirrors int // the Mirrors moved to
	desc    ocispec.Descriptor
	o       BlobOptions
	hash    hash.Hash // of the bytes [0, got)

	part      *partial // nil: nothing kept on disk
	replayEnd int64    // the bytes of the partial download at the start
	got       int64    // bytes received (partial and network), hashed
	off       int64    // bytes handed to the reader
	saved     int64    // got at the last checkpoint
	savedAt   time.Time

	body   io.ReadCloser // the network body, positioned at got; nil between connections
	stalls int           // resumes in a row without progress
	// sinceConnect counts the bytes of the current connection.
	sinceConnect int64
	// watch closes a connection that is too slow (see SlowWindow); window
	// is what the connection brought in the current window, slow is set
	// when it closed one.
	watchMu  sync.Mutex
	watch    *time.Timer
	watchGen int
	window   atomic.Int64
	slow     atomic.Bool
	failure  error // the transport failure the next resume answers
	err      error // sticky
}

// at points the reader at the blob in ref's repository.
func (r *blobReader) at(ref Reference) {
	repo, _ := r.c.repository(ref) // checked by FetchBlob
	scheme := "https"
	if repo.PlainHTTP {
		scheme = "http"
	}
	r.url = fmt.Sprintf("%s://%s/v2/%s/blobs/%s", scheme, repo.Reference.Host(), repo.Reference.Repository, r.desc.Digest)
	r.repo = ref.Repo()
	r.rctx = auth.AppendRepositoryScope(r.ctx, repo.Reference, auth.ActionPull)
}

// connect opens the network body at byte got, with a Range request when
// got > 0 (a closed range, which every registry understands); a registry
// refusing the range is asked for the whole blob.
func (r *blobReader) connect() error {
	return r.connectRange(r.got > 0)
}

func (r *blobReader) connectRange(ranged bool) error {
	req, err := http.NewRequestWithContext(r.rctx, http.MethodGet, r.url, nil)
	if err != nil {
		return err
	}
	if ranged {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", r.got, r.desc.Size-1))
	}
	resp, err := r.c.auth.Do(req)
	if err != nil {
		return classify(fmt.Errorf("fetch blob %s from %s: %w", r.desc.Digest, r.repo, err))
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent && r.got > 0:
		if start, ok := rangeStart(resp.Header.Get("Content-Range")); !ok || start != r.got {
			resp.Body.Close()
			return fmt.Errorf("fetch blob %s from %s: asked for bytes from %d, the registry answered the range %q", r.desc.Digest, r.repo, r.got, resp.Header.Get("Content-Range"))
		}
	case resp.StatusCode == http.StatusOK:
		// A registry that ignores Range sends the whole blob: skip what
		// was received already.
		if r.got > 0 {
			if _, err := io.CopyN(io.Discard, resp.Body, r.got); err != nil {
				resp.Body.Close()
				return fmt.Errorf("fetch blob %s from %s: skipping the %d bytes received before: %w", r.desc.Digest, r.repo, r.got, err)
			}
		}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && ranged:
		resp.Body.Close()
		return r.connectRange(false)
	default:
		defer resp.Body.Close()
		return classify(fmt.Errorf("fetch blob %s from %s: %w", r.desc.Digest, r.repo, errorResponse(resp)))
	}
	r.body = resp.Body
	r.watchSlow()
	return nil
}

// watchSlow closes the connection if it brings less than SlowRate over
// each SlowWindow while mirrors remain to go on from.
func (r *blobReader) watchSlow() {
	r.stopWatch()
	if r.o.SlowWindow <= 0 || r.o.SlowRate <= 0 || r.mirrors >= len(r.o.Mirrors) {
		return
	}
	body := r.body
	floor := int64(r.o.SlowWindow.Seconds() * float64(r.o.SlowRate))
	r.window.Store(0)
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	r.watchGen++
	gen := r.watchGen
	var check func()
	check = func() {
		r.watchMu.Lock()
		defer r.watchMu.Unlock()
		if gen != r.watchGen {
			return // stopped
		}
		if r.window.Swap(0) < floor {
			r.slow.Store(true)
			body.Close()
			return
		}
		r.watch = time.AfterFunc(r.o.SlowWindow, check)
	}
	r.watch = time.AfterFunc(r.o.SlowWindow, check)
}

func (r *blobReader) stopWatch() {
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	r.watchGen++
	if r.watch != nil {
		r.watch.Stop()
		r.watch = nil
	}
}

// rangeStart parses the first byte of a Content-Range: bytes START-END/SIZE.
func rangeStart(cr string) (int64, bool) {
	rest, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return 0, false
	}
	start, _, ok := strings.Cut(rest, "-")
	n, err := strconv.ParseInt(start, 10, 64)
	return n, ok && err == nil
}

// errorResponse is the registry's error answer, its body bounded.
func errorResponse(resp *http.Response) error {
	e := &errcode.ErrorResponse{Method: resp.Request.Method, URL: resp.Request.URL, StatusCode: resp.StatusCode}
	var body struct {
		Errors errcode.Errors `json:"errors"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body) == nil {
		e.Errors = body.Errors
	}
	return e
}

func (r *blobReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.off < r.replayEnd {
		n, err := r.part.f.ReadAt(p[:min(int64(len(p)), r.replayEnd-r.off)], r.off)
		r.off += int64(n)
		if n == 0 && err != nil {
			r.err = fmt.Errorf("read the partial download of blob %s: %w", r.desc.Digest, err)
			return 0, r.err
		}
		return n, nil
	}
	for r.got < r.desc.Size {
		if cerr := r.ctx.Err(); cerr != nil {
			// A body may still hand out buffered bytes after its context
			// ended: stop here, so that deadlines and rate caps hold.
			r.err = fmt.Errorf("fetch blob %s from %s: %d of %d bytes received: %w", r.desc.Digest, r.repo, r.got, r.desc.Size, cerr)
			r.checkpoint()
			return 0, r.err
		}
		if r.body == nil {
			if err := r.resume(); err != nil {
				r.err = err
				r.checkpoint()
				return 0, err
			}
			continue
		}
		n, err := r.readNet(p)
		if n > 0 {
			return n, nil
		}
		if err != nil {
			r.body.Close()
			r.body = nil
			if cerr := r.ctx.Err(); cerr != nil {
				r.err = fmt.Errorf("fetch blob %s from %s: %d of %d bytes received: %w", r.desc.Digest, r.repo, r.got, r.desc.Size, cerr)
				r.checkpoint()
				return 0, r.err
			}
			r.lastErr(err)
		}
	}
	r.stopWatch()
	r.err = r.finish()
	return 0, r.err
}

// readNet reads from the network body into p and accounts for the bytes.
// An error after bytes (or the body ending early) closes the body for the
// next Read to resume.
func (r *blobReader) readNet(p []byte) (int, error) {
	want := min(int64(len(p)), r.desc.Size-r.got)
	if r.o.Limiter != nil {
		want = min(want, int64(r.o.Limiter.Burst()))
	}
	n, err := r.body.Read(p[:want])
	if n > 0 {
		r.hash.Write(p[:n])
		if r.part != nil {
			if _, werr := r.part.f.WriteAt(p[:n], r.got); werr != nil {
				r.part.discard() // keep downloading, without a partial
				r.part = nil
			}
		}
		r.got += int64(n)
		r.off += int64(n)
		r.sinceConnect += int64(n)
		r.window.Add(int64(n))
		failpoint.Hit("oci.download")
		if r.part != nil && (r.got-r.saved >= checkpointBytes || time.Since(r.savedAt) >= checkpointEvery) {
			r.checkpoint()
		}
		if r.o.Limiter != nil && r.o.Limiter.WaitN(r.ctx, n) != nil {
			// The tokens would come after the deadline: no byte more can
			// be read in time. The next read reports the context's end.
			<-r.ctx.Done()
		}
	}
	if err == io.EOF && r.got < r.desc.Size {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && n == 0 {
		return 0, nil
	}
	if err != nil && n > 0 {
		r.body.Close()
		r.body = nil
		r.lastErr(err)
		return n, nil
	}
	return n, err
}

// lastErr records a transport failure of the network body.
func (r *blobReader) lastErr(err error) {
	what := fmt.Sprintf("blob %s from %s (%d of %d bytes received)", r.desc.Digest, r.repo, r.got, r.desc.Size)
	if r.slow.Swap(false) {
		r.failure = fmt.Errorf("%w: %s: slower than %d bytes/s over %v", ErrSlow, what, r.o.SlowRate, r.o.SlowWindow)
		r.stalls = r.o.Resumes // go on from the next mirror at once
		return
	}
	r.failure = ReadError(what, r.desc, err)
}

// resume reconnects after a transport failure, when resumes are left, or
// moves to the next mirror.
func (r *blobReader) resume() error {
	r.stopWatch()
	if r.sinceConnect >= resumeProgress && !errors.Is(r.failure, ErrSlow) {
		r.stalls = 0 // the last connection brought something
	}
	r.sinceConnect = 0
	if r.stalls >= r.o.Resumes {
		failure := r.failure
		if r.o.Resumes > 0 {
			failure = fmt.Errorf("%w (gave up after %d resumes)", r.failure, r.o.Resumes)
		}
		if r.mirrors >= len(r.o.Mirrors) {
			return failure
		}
		r.at(r.o.Mirrors[r.mirrors])
		r.mirrors++
		r.stalls = 0
		if err := r.connect(); err != nil {
			r.failure = fmt.Errorf("%w; then %w", failure, err)
			return r.resume()
		}
		return nil
	}
	r.stalls++
	t := time.NewTimer(time.Duration(r.stalls) * resumePause)
	select {
	case <-r.ctx.Done():
		t.Stop()
		return fmt.Errorf("%w (while resuming: %w)", r.failure, r.ctx.Err())
	case <-t.C:
	}
	if err := r.connect(); err != nil {
		r.failure = fmt.Errorf("%w; resuming: %w", r.failure, err)
		return r.resume()
	}
	return nil
}

// Served tells where the download ended: 0 for the repository FetchBlob
// was given, i for BlobOptions.Mirrors[i-1].
func (r *blobReader) Served() int { return r.mirrors }

// finish checks the digest of the whole blob.
func (r *blobReader) finish() error {
	got := digest.NewDigest(r.desc.Digest.Algorithm(), r.hash)
	if got != r.desc.Digest {
		r.part.discard()
		r.part = nil
		return fmt.Errorf("%w: blob %s from %s: the %d bytes received hash to %s", ErrDigestMismatch, r.desc.Digest, r.repo, r.desc.Size, got)
	}
	r.part.done()
	r.part = nil
	return io.EOF
}

// checkpoint saves the partial download: its bytes synced, then its hash
// state.
func (r *blobReader) checkpoint() {
	if r.part == nil || r.got == r.saved {
		return
	}
	if err := r.part.save(r.got, r.hash); err != nil {
		r.part.discard()
		r.part = nil
		return
	}
	r.saved, r.savedAt = r.got, time.Now()
}

// Close ends the download; what was received is kept for the next
// FetchBlob of the blob when a PartialDir is set.
func (r *blobReader) Close() error {
	r.stopWatch()
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
	if r.part != nil {
		r.checkpoint()
		if r.saved == 0 {
			r.part.discard() // nothing to resume from
		} else {
			r.part.close()
		}
		r.part = nil
	}
	if r.err == nil {
		r.err = fmt.Errorf("read blob %s: closed", r.desc.Digest)
	}
	return nil
}
