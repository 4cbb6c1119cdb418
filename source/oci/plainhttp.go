package oci

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
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
