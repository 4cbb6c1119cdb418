package oci

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/berth-dev/berth/internal/failpoint"
)

// Default caps of what a registry can make the client read, used for the
// zero fields of Options.
const (
	// DefaultMaxTags caps the tags a listing collects.
	DefaultMaxTags = 100_000
	// DefaultMaxTagPages caps the pages a listing follows.
	DefaultMaxTagPages = 10_000
)

// capTransport bounds the bodies of the answers that are read whole:
// manifests (and the referrers fallback index, which is one) and referrers
// indexes. A Content-Length over MaxManifestSize is refused before any byte
// is read, a body without one as soon as it passes the cap. Blobs are
// bounded by their descriptors where they are read, tag lists by oras-go.
type capTransport struct{ rt http.RoundTripper }

var _ http.RoundTripper = capTransport{}

func (t capTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	failpoint.Hit(phase(req))
	resp, err := t.rt.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || resp.StatusCode != http.StatusOK || !metadataPath(req.URL.Path) {
		return resp, err
	}
	what := req.Method + " " + req.URL.Redacted()
	if resp.ContentLength > MaxManifestSize {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: %s: the registry answers %d bytes, over the cap of %d for a manifest or an index", ErrTooLarge, what, resp.ContentLength, MaxManifestSize)
	}
	resp.Body = &capBody{rc: resp.Body, left: MaxManifestSize, what: what}
	return resp, nil
}

// metadataPath reports whether path is that of a manifest or a referrers
// listing: /v2/<name>/manifests/<ref> or /v2/<name>/referrers/<digest>.
func metadataPath(path string) bool {
	i := strings.LastIndex(path, "/")
	if i < 0 {
		return false
	}
	dir := path[:i]
	return strings.HasPrefix(path, "/v2/") && (strings.HasSuffix(dir, "/manifests") || strings.HasSuffix(dir, "/referrers"))
}

// phase names the step of a reconcile a registry request belongs to, for
// the crash tests' failpoints: resolving a tag, reading signatures,
// fetching the manifest by digest, downloading a blob.
func phase(req *http.Request) string {
	p := req.URL.Path
	ref := p[strings.LastIndex(p, "/")+1:]
	switch {
	case strings.HasSuffix(p, "/tags/list"):
		return "oci.resolve"
	case strings.Contains(p, "/referrers/"), strings.Contains(p, "/manifests/") && strings.HasPrefix(ref, "sha256-"):
		return "oci.verify"
	case strings.Contains(p, "/manifests/") && strings.HasPrefix(ref, "sha256:"):
		return "oci.manifest"
	case strings.Contains(p, "/manifests/"):
		return "oci.resolve"
	case strings.Contains(p, "/blobs/"):
		return "oci.blob"
	}
	return "oci.request"
}

// capBody fails once more than left bytes are read.
type capBody struct {
	rc   io.ReadCloser
	left int64
	what string
}

func (b *capBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		var one [1]byte
		if n, err := b.rc.Read(one[:]); n == 0 {
			return 0, err
		}
		return 0, fmt.Errorf("%w: %s: the answer runs past the cap of %d bytes for a manifest or an index", ErrTooLarge, b.what, MaxManifestSize)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *capBody) Close() error { return b.rc.Close() }

// tagLimits returns the caps of a tag listing.
func (c *Client) tagLimits() (maxTags, maxPages int) {
	maxTags, maxPages = c.opts.MaxTags, c.opts.MaxTagPages
	if maxTags <= 0 {
		maxTags = DefaultMaxTags
	}
	if maxPages <= 0 {
		maxPages = DefaultMaxTagPages
	}
	return maxTags, maxPages
}

// errTagCap ends a tag listing over its cap.
var errTagCap = errors.New("tag cap")
