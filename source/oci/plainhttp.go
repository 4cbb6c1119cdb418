package oci

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// loopbackHTTP follows Docker's convention for registries on loopback
// (localhost, 127.0.0.0/8, ::1): they may speak plain HTTP without a
// flag. A request over HTTPS to such a host that gets a plain-HTTP answer
// is sent again over HTTP, and the host is remembered as plain. Any other
// host answering plain HTTP fails with ErrPlainHTTP, which says which flag
// or field allows it.
type loopbackHTTP struct {
	next  http.RoundTripper
	plain sync.Map // host:port → true once it answered plain HTTP
}

var _ http.RoundTripper = (*loopbackHTTP)(nil)

func (t *loopbackHTTP) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" {
		return t.next.RoundTrip(req)
	}
	if _, ok := t.plain.Load(req.URL.Host); ok {
		return t.next.RoundTrip(asHTTP(req))
	}
	resp, err := t.next.RoundTrip(req)
	if err == nil || !answeredPlainHTTP(err) {
		return resp, err
	}
	if !IsLoopback(req.URL.Hostname()) {
		return nil, fmt.Errorf("%w: %s: %v", ErrPlainHTTP, req.URL.Host, err)
	}
	if req.Body != nil && req.GetBody == nil {
		return nil, err // cannot send the body again
	}
	t.plain.Store(req.URL.Host, true)
	return t.next.RoundTrip(asHTTP(req))
}

// asHTTP returns req over plain HTTP, with a fresh body.
func asHTTP(req *http.Request) *http.Request {
	r := req.Clone(req.Context())
	r.URL.Scheme = "http"
	if req.GetBody != nil {
		if body, err := req.GetBody(); err == nil {
			r.Body = body
		}
	}
	return r
}

// answeredPlainHTTP reports whether err is a TLS handshake that got an
// HTTP response (what net/http's client reports as ErrSchemeMismatch).
func answeredPlainHTTP(err error) bool {
	var re tls.RecordHeaderError
	return errors.As(err, &re) && string(re.RecordHeader[:]) == "HTTP/"
}

// plainHTTP reports whether to speak plain HTTP to host: with
// Options.Insecure, or when host is on loopback and answers plain HTTP to
// HTTPS (probed once, then remembered). oras-go needs to know before the
// first request: it refuses an upload location that downgrades from the
// scheme it started with.
func (c *Client) plainHTTP(host string) bool {
	if c.opts.Insecure {
		return true
	}
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	if !IsLoopback(h) || c.opts.Transport != nil {
		return false
	}
	if v, ok := c.plain.Load(host); ok {
		return v.(bool)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	plain := false
	if req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/v2/", nil); err == nil {
		resp, err := c.base.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		plain = err != nil && answeredPlainHTTP(err)
	}
	c.plain.Store(host, plain)
	return plain
}

// IsLoopback reports whether host (a name or an IP, without port) is a
// loopback address: localhost, 127.0.0.0/8 or ::1.
func IsLoopback(host string) bool {
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
