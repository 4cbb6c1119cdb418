package report

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/internal/promclient"
)

// newHTTPClient returns the client the reporter sends with (see package
// promclient), every byte its connections send or receive added to wire,
// and the status code of each answer told to the request context's
// statusHolder.
func newHTTPClient(o *Options, wire *atomic.Int64) (*http.Client, error) {
	c := promclient.Config{
		CAFile: o.CAFile, Insecure: o.Insecure, BearerTokenFile: o.BearerTokenFile,
		Timeout: o.Timeout, UserAgent: o.UserAgent, Wire: wire,
		// Keep the connection between two pushes: a new TLS handshake
		// costs about 2.7 KB (Go's client hello carries a post-quantum key
		// share), more than six heartbeats. The endpoint then holds one
		// connection per device: Prometheus accepts 512 at once unless
		// --web.max-connections says more.
		IdleConnTimeout: max(o.Interval+30*time.Second, 90*time.Second),
	}
	if b := o.BasicAuth; b != nil {
		c.Username, c.PasswordFile = b.Username, b.PasswordFile
	}
	client, err := promclient.New(c)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOptions, err)
	}
	client.Transport = &statusTransport{next: client.Transport}
	return client, nil
}

// statusTransport tells the context's statusHolder the answer's status
// code: the remote API's errors do not say whether a request may be tried
// again.
type statusTransport struct{ next http.RoundTripper }

func (t *statusTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if h, ok := req.Context().Value(statusKey{}).(*statusHolder); ok && err == nil {
		h.code.Store(int32(resp.StatusCode))
	}
	return resp, err
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// wrapped transport.
func (t *statusTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// statusKey is the context key of a statusHolder.
type statusKey struct{}

// statusHolder receives the status code of the last answer to a send.
type statusHolder struct{ code atomic.Int32 }

func withStatus(ctx context.Context) (context.Context, *statusHolder) {
	h := &statusHolder{}
	return context.WithValue(ctx, statusKey{}, h), h
}
