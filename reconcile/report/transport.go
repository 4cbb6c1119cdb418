package report

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// maxSecretFile caps what is read of a token or password file.
const maxSecretFile = 64 << 10

// newHTTPClient returns the client the reporter sends with: TLS with the
// system's roots plus CAFile (or plain HTTP with Insecure), credentials
// from BearerTokenFile or BasicAuth read at every request (so a rotated
// token is picked up), and every byte its connections send or receive
// added to wire.
func newHTTPClient(o *Options, wire *atomic.Int64) (*http.Client, error) {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &countingConn{Conn: c, n: wire}, nil
		},
		// HTTP/2 over TLS compresses the headers of the requests that
		// follow the first on a connection (HPACK).
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
		// Keep the connection between two pushes, so that a 1-minute
		// interval does not pay a TLS handshake every time.
		IdleConnTimeout:       max(o.Interval+30*time.Second, 90*time.Second),
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: o.Timeout,
		// The answers are empty: asking for gzip would only cost bytes.
		DisableCompression: true,
	}
	if !o.Insecure {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if o.CAFile != "" {
			pem, err := readSmall(o.CAFile)
			if err != nil {
				return nil, fmt.Errorf("%w: caFile: %w", ErrOptions, err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%w: caFile %s holds no PEM certificate", ErrOptions, o.CAFile)
			}
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{
		Transport: &authTransport{next: tr, o: o},
		Timeout:   o.Timeout,
	}, nil
}

// authTransport adds the User-Agent and the credentials to every request,
// and tells the context's statusHolder the answer's status code.
type authTransport struct {
	next http.RoundTripper
	o    *Options
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("User-Agent", t.o.UserAgent)
	switch {
	case t.o.BearerTokenFile != "":
		tok, err := readSecret(t.o.BearerTokenFile)
		if err != nil {
			return nil, fmt.Errorf("bearerTokenFile: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	case t.o.BasicAuth != nil:
		pw, err := readSecret(t.o.BasicAuth.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("basicAuth.passwordFile: %w", err)
		}
		req.SetBasicAuth(t.o.BasicAuth.Username, pw)
	}
	resp, err := t.next.RoundTrip(req)
	if h, ok := req.Context().Value(statusKey{}).(*statusHolder); ok && err == nil {
		h.code.Store(int32(resp.StatusCode))
	}
	return resp, err
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// wrapped transport.
func (t *authTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// statusKey is the context key of a statusHolder.
type statusKey struct{}

// statusHolder receives the status code of the last answer to a send: the
// remote API's errors do not say whether a request may be tried again.
type statusHolder struct{ code atomic.Int32 }

func withStatus(ctx context.Context) (context.Context, *statusHolder) {
	h := &statusHolder{}
	return context.WithValue(ctx, statusKey{}, h), h
}

// readSecret reads a token or password file, without its trailing newline.
func readSecret(path string) (string, error) {
	b, err := readSmall(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// readSmall reads a file of at most maxSecretFile bytes.
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSecretFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxSecretFile)
	}
	return b, nil
}

// countingConn adds the bytes read and written to n.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	k, err := c.Conn.Read(p)
	c.n.Add(int64(k))
	return k, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	k, err := c.Conn.Write(p)
	c.n.Add(int64(k))
	return k, err
}
