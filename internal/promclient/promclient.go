// Package promclient makes the HTTP clients berth talks to Prometheus with
// (the agent's remote-write reporter, and the fleet commands that read a
// rollout back with PromQL): TLS with the system's roots plus a CA file, or
// plain HTTP, and a bearer token or basic-auth password read from a file
// at every request, so that a rotated credential is picked up.
package promclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// maxSecretFile caps what is read of a CA, token or password file.
const maxSecretFile = 1 << 20

// ErrConfig is wrapped by the errors of New.
var ErrConfig = errors.New("invalid Prometheus client configuration")

// Config configures a client.
type Config struct {
	// CAFile is a PEM bundle trusted besides the system's roots.
	CAFile string
	// Insecure is plain HTTP: no TLS configuration is made.
	Insecure bool
	// BearerTokenFile holds a bearer token.
	BearerTokenFile string
	// Username and PasswordFile are basic-auth credentials.
	Username, PasswordFile string
	// Timeout bounds a request (0: none).
	Timeout time.Duration
	// IdleConnTimeout keeps an idle connection this long (default 90s).
	IdleConnTimeout time.Duration
	// UserAgent of the requests.
	UserAgent string
	// Wire, when not nil, receives every byte the client's connections
	// send and receive (TLS included).
	Wire *atomic.Int64
}

// New returns a client configured by c.
func New(c Config) (*http.Client, error) {
	if c.BearerTokenFile != "" && (c.Username != "" || c.PasswordFile != "") {
		return nil, fmt.Errorf("%w: give a bearer token or basic auth, not both", ErrConfig)
	}
	if (c.Username == "") != (c.PasswordFile == "") {
		return nil, fmt.Errorf("%w: basic auth needs a user name and a password file", ErrConfig)
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	idle := c.IdleConnTimeout
	if idle <= 0 {
		idle = 90 * time.Second
	}
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, network, addr)
			if err != nil || c.Wire == nil {
				return conn, err
			}
			return &countingConn{Conn: conn, n: c.Wire}, nil
		},
		// HTTP/2 over TLS compresses the headers of the requests that
		// follow the first on a connection (HPACK).
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          2,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       idle,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: c.Timeout,
		// Remote-write answers are empty, and PromQL answers small.
		DisableCompression: true,
	}
	if !c.Insecure {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if c.CAFile != "" {
			pem, err := readSmall(c.CAFile)
			if err != nil {
				return nil, fmt.Errorf("%w: CA file: %w", ErrConfig, err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%w: CA file %s holds no PEM certificate", ErrConfig, c.CAFile)
			}
		}
		tr.TLSClientConfig = &tls.Config{
			RootCAs: pool, MinVersion: tls.VersionTLS12,
			// Resume TLS sessions: when a NAT or the server drops the idle
			// connection between two pushes, the next handshake does not
			// carry the certificate chain again.
			ClientSessionCache: tls.NewLRUClientSessionCache(4),
		}
	}
	return &http.Client{Transport: &authTransport{next: tr, c: c}, Timeout: c.Timeout}, nil
}

// authTransport adds the User-Agent and the credentials to every request.
type authTransport struct {
	next http.RoundTripper
	c    Config
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	if t.c.UserAgent != "" {
		req.Header.Set("User-Agent", t.c.UserAgent)
	}
	switch {
	case t.c.BearerTokenFile != "":
		tok, err := ReadSecret(t.c.BearerTokenFile)
		if err != nil {
			return nil, fmt.Errorf("bearer token: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	case t.c.Username != "":
		pw, err := ReadSecret(t.c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("basic-auth password: %w", err)
		}
		req.SetBasicAuth(t.c.Username, pw)
	}
	return t.next.RoundTrip(req)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// wrapped transport.
func (t *authTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// ReadSecret reads a token or password file, without its trailing line
// break; an empty file is an error.
func ReadSecret(path string) (string, error) {
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
