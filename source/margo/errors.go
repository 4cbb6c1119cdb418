package margo

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/errdef"
	"github.com/berth-dev/berth/source/margo/spec"
)

// Sentinel errors.
var (
	// ErrStaleManifest is the class of *StaleManifestError: a manifest
	// whose manifestVersion is not greater than the accepted one.
	ErrStaleManifest = errdef.Refusal("stale Margo manifest refused (rollback or replay)")
	// ErrDigestMismatch reports content that does not hash to the digest
	// the manifest (or the ETag) gives.
	ErrDigestMismatch = errdef.Refusal("digest mismatch")
	// ErrTooLarge reports a body over its size cap.
	ErrTooLarge = errdef.Refusal("too large")
	// ErrInvalidBundle reports a bundle that does not hold exactly the
	// deployments of its manifest.
	ErrInvalidBundle = errdef.Refusal("invalid Margo bundle")
	// ErrInvalidTrustBundle reports a SPIFFE bundle that does not parse
	// or whose keys do not hold together.
	ErrInvalidTrustBundle = errdef.Refusal("invalid SPIFFE trust bundle")
	// ErrEmptyTrustBundle reports a SPIFFE bundle without x509-svid
	// anchors: refused, the bundle in force stays (fail closed).
	ErrEmptyTrustBundle = errdef.Refusal("SPIFFE trust bundle without x509-svid anchors")
	// ErrTrustBundleRegression reports a bundle whose spiffe_sequence is
	// lower than the accepted one's (a rollback or replay).
	ErrTrustBundleRegression = errdef.Refusal("SPIFFE trust bundle sequence regression")
	// ErrUnavailable reports content the WFM answers 404 for: it is not
	// available now; it is never a deletion.
	ErrUnavailable = errors.New("content unavailable")
	// ErrIdentity reports a device SVID, trust bundle or WFM SPIFFE ID that
	// cannot be used.
	ErrIdentity = errors.New("Margo identity")
	// ErrRetryable and ErrPermanent are the two classes of *APIError: retry
	// after a delay, or give up until the next poll.
	ErrRetryable = errors.New("retryable")
	ErrPermanent = errors.New("not retryable")
)

// StaleManifestError is a manifest refused because its manifestVersion is
// not strictly greater than the one accepted before: a rollback or replay.
type StaleManifestError struct {
	Got, Accepted uint64
}

func (e *StaleManifestError) Error() string {
	return fmt.Sprintf("WFM served manifestVersion %d, not greater than the accepted %d: refused as a possible rollback or replay (the device keeps its current state)", e.Got, e.Accepted)
}

// Is makes the error match ErrStaleManifest and so errdef.ErrRefused.
func (e *StaleManifestError) Is(target error) bool {
	return target == ErrStaleManifest || target == errdef.ErrRefused
}

// APIError is an error answer of the WFM.
type APIError struct {
	Method, URL string
	Status      int
	// Problem is the problem+json body, nil when there was none or it was
	// not valid (then Body holds its start).
	Problem *spec.Problem
	Body    string
	// RetryAfter is the longer of the Retry-After header and the problem's
	// retryAfterSeconds; 0 when neither says.
	RetryAfter time.Duration
	// Retryable is the problem's retryable, else true for 429, 500, 502,
	// 503 and 504.
	Retryable bool
	// Backoff is the problem's backoffStrategy: "exponential", "none" or
	// empty.
	Backoff string
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "WFM answered %s %s with ", e.Method, e.URL)
	switch {
	case e.Problem != nil:
		b.WriteString(e.Problem.String())
	case e.Body != "":
		fmt.Fprintf(&b, "%d %s: %s", e.Status, http.StatusText(e.Status), e.Body)
	default:
		fmt.Fprintf(&b, "%d %s", e.Status, http.StatusText(e.Status))
	}
	if e.Retryable {
		if e.RetryAfter > 0 {
			fmt.Fprintf(&b, " (retrying after %v)", e.RetryAfter)
		} else {
			b.WriteString(" (will retry)")
		}
	}
	if e.Status == http.StatusForbidden {
		b.WriteString(": the WFM does not accept this device's identity; ask its operator to check the accepted-client policy for this SVID")
	}
	return b.String()
}

// Is puts the error in ErrRetryable or ErrPermanent, and makes a 404
// ErrUnavailable.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrRetryable:
		return e.Retryable
	case ErrPermanent:
		return !e.Retryable
	case ErrUnavailable:
		return e.Status == http.StatusNotFound
	}
	return false
}

// retryableStatus are the statuses retried when the body does not say.
func retryableStatus(code int) bool {
	switch code {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if s, err := strconv.ParseUint(h, 10, 32); err == nil {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// Backoff computes the delays between retries of one operation: at least
// the WFM's Retry-After, doubled on every retry when the strategy is
// exponential (and for transport failures), capped at Max.
type Backoff struct {
	// Base is the first delay when the WFM gives none. Default 5s.
	Base time.Duration
	// Max caps every delay. Default 10m.
	Max     time.Duration
	attempt int
}

// Next returns how long to wait before retrying after err, and false when
// err is not worth retrying before the next poll (a refused manifest, a
// non-retryable API error, a bad identity). It counts the attempt.
func (b *Backoff) Next(err error) (time.Duration, bool) {
	base, maxWait := b.Base, b.Max
	if base <= 0 {
		base = 5 * time.Second
	}
	if maxWait <= 0 {
		maxWait = 10 * time.Minute
	}
	var ae *APIError
	switch {
	case err == nil:
		return 0, false
	case errors.As(err, &ae):
		if !ae.Retryable {
			return 0, false
		}
		d := max(ae.RetryAfter, base)
		if ae.Backoff != spec.BackoffNone {
			d = max(ae.RetryAfter, exp(base, b.attempt))
		}
		b.attempt++
		return min(d, max(maxWait, ae.RetryAfter)), true
	case errors.Is(err, errdef.ErrRefused), errors.Is(err, ErrIdentity), errors.Is(err, ErrUnavailable):
		return 0, false
	}
	d := exp(base, b.attempt)
	b.attempt++
	return min(d, maxWait), true
}

// Reset starts over after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

func exp(base time.Duration, n int) time.Duration {
	if n > 20 {
		n = 20
	}
	return base << n
}
