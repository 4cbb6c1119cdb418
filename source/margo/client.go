package margo

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/source/margo/spec"
)

// API paths of rc.3, relative to the WFM's base URL.
const (
	pathDeployments  = "/api/v1/deployments"
	pathCapabilities = "/api/v1/capabilities/"
)

// Defaults of Options.
const (
	DefaultTimeout       = 30 * time.Second
	DefaultMaxBundleSize = 64 << 20
)

// Options configure a Client.
type Options struct {
	// URL is the WFM's base URL, https://host[:port][/prefix]. The URLs of
	// a manifest are paths on that host.
	URL string
	// DeviceID is the device's id in the WFM (capabilities path and status
	// deviceId).
	DeviceID string
	// Identity is the device's SVID, key and trust bundle.
	Identity Identity
	// WFMID, when set, must equal the WFM SPIFFE ID derived from the
	// device's SVID (see LoadIdentity).
	WFMID string
	// TrustBundle, when its URI or Discovery is set, keeps the trust
	// bundle fresh from the MIS.
	TrustBundle TrustBundleOptions
	// AllowTLS12 accepts TLS 1.2 (RFC 9325 fallback; it leaks the SPIFFE ID
	// in cleartext). Default TLS 1.3 only.
	AllowTLS12 bool
	// CacheDir holds the verified ApplicationDeployment YAMLs, by digest.
	CacheDir string
	// Timeout bounds each request. Default DefaultTimeout.
	Timeout time.Duration
	// MaxBundleSize caps a bundle body. Default DefaultMaxBundleSize.
	MaxBundleSize int64
	// UserAgent is sent with every request. Default "berth".
	UserAgent string
	// Log receives security events and what the client does; nil discards.
	Log *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Client talks to one WFM. It is safe for concurrent use.
type Client struct {
	opts  Options
	base  *url.URL
	id    *identitySource
	tr    *http.Transport
	http  *http.Client
	log   *slog.Logger
	cache *contentCache
	tb    *bundleFetcher // nil: no bundle endpoint

	mu       sync.Mutex
	peerEnds time.Time // earliest NotAfter of the WFM SVIDs of open connections
}

// New checks the options, loads the identity and builds the client. It does
// not reach the WFM.
func New(o Options) (*Client, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxBundleSize <= 0 {
		o.MaxBundleSize = DefaultMaxBundleSize
	}
	if o.UserAgent == "" {
		o.UserAgent = "berth"
	}
	base, err := url.Parse(o.URL)
	if err != nil || base.Scheme != "https" || base.Host == "" || base.User != nil || base.RawQuery != "" || base.Fragment != "" {
		return nil, fmt.Errorf("WFM URL %q: must be https://HOST[:PORT][/PATH] (the Management Interface is HTTPS only)", o.URL)
	}
	base.Path = strings.TrimSuffix(base.Path, "/")
	if !spec.ValidDeviceID(o.DeviceID) {
		return nil, fmt.Errorf("Margo device id %q: use letters, digits, '.', '_', '~' and '-'", o.DeviceID)
	}
	if o.CacheDir == "" {
		return nil, errors.New("Margo client: no cache folder")
	}
	if o.TrustBundle.enabled() {
		for _, u := range []string{o.TrustBundle.URI, o.TrustBundle.Discovery} {
			if u != "" {
				if err := CheckTrustBundleURI(u); err != nil {
					return nil, fmt.Errorf("Margo trust bundle: %w", err)
				}
			}
		}
		if o.TrustBundle.CacheFile == "" {
			return nil, errors.New("Margo trust bundle: no cache file")
		}
		o.Identity.BundleCacheFile = o.TrustBundle.CacheFile
	}
	l, err := loadIdentity(o.Identity, o.WFMID, o.Now())
	if err != nil {
		return nil, err
	}
	src := &identitySource{files: o.Identity, wfmID: o.WFMID, current: l}
	tr := &http.Transport{
		Proxy:                 nil, // inspecting proxies are unsupported: Margo endpoints are reached directly
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       src.tlsConfig(o.AllowTLS12),
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: o.Timeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   2,
		// HTTP/1.1 only, as the spec says.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		opts:  o,
		base:  base,
		id:    src,
		tr:    tr,
		http:  &http.Client{Transport: tr, CheckRedirect: noRedirects},
		log:   log.With("wfm", base.Host),
		cache: &contentCache{dir: o.CacheDir},
	}
	if o.TrustBundle.enabled() {
		c.tb = &bundleFetcher{o: o.TrustBundle, c: c}
	}
	c.log.Info("Margo identity loaded", "client", l.svid.ID.String(), "wfmID", l.wfmID.String(), "svidExpires", l.svid.Certificates[0].NotAfter)
	return c, nil
}

// noRedirects refuses redirects: a WFM answers its API itself.
func noRedirects(req *http.Request, _ []*http.Request) error {
	return fmt.Errorf("WFM redirected to %s: redirects are not followed on the Management Interface", req.URL.Redacted())
}

// Identity returns the identity in force.
func (c *Client) Identity() *IdentityInfo {
	c.id.mu.RLock()
	defer c.id.mu.RUnlock()
	return c.id.current.info()
}

// Close closes the idle connections.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// refresh reloads the identity files when they changed, and closes the
// open connections when the identity changed or a certificate of an open
// connection has expired, so the next request handshakes anew.
func (c *Client) refresh(ctx context.Context) error {
	c.maybeRefreshTrustBundle(ctx)
	c.refreshIdentity()
	return nil
}

// refreshIdentity is refresh without the trust bundle fetch.
func (c *Client) refreshIdentity() {
	now := c.opts.Now()
	changed, err := c.id.reload(now)
	if err != nil {
		c.log.Warn("Margo identity files changed but cannot be used; keeping the identity in force", "error", err)
	}
	c.mu.Lock()
	expired := !c.peerEnds.IsZero() && now.After(c.peerEnds)
	if changed || expired {
		c.peerEnds = time.Time{}
	}
	c.mu.Unlock()
	if changed || expired || now.After(c.id.notAfter()) {
		if changed {
			c.log.Info("Margo identity reloaded", "client", c.Identity().ClientID, "svidExpires", c.Identity().NotAfter)
		}
		c.tr.CloseIdleConnections()
	}
}

// notePeer records when the WFM certificate of a connection expires.
func (c *Client) notePeer(cs *tls.ConnectionState) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return
	}
	na := cs.PeerCertificates[0].NotAfter
	c.mu.Lock()
	if c.peerEnds.IsZero() || na.Before(c.peerEnds) {
		c.peerEnds = na
	}
	c.mu.Unlock()
}

// resolve returns the absolute URL of a WFM path: an API path is appended
// to the base URL's path; a manifest's content path is taken as a path on
// the WFM's host.
func (c *Client) resolve(p string, content bool) string {
	u := *c.base
	if content {
		u.Path = p
	} else {
		u.Path = c.base.Path + p
	}
	return u.String()
}

// request sends one request and returns the response when its status is
// among ok; any other answer becomes an *APIError (its body read, bounded).
func (c *Client) request(ctx context.Context, method, rawURL string, header http.Header, body []byte, ok ...int) (*http.Response, error) {
	if err := c.refresh(ctx); err != nil {
		return nil, err
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, rawURL, rd)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", c.opts.UserAgent)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.transportError(method, rawURL, err)
	}
	c.notePeer(resp.TLS)
	for _, code := range ok {
		if resp.StatusCode == code {
			return resp, nil
		}
	}
	defer resp.Body.Close()
	return nil, c.apiError(method, rawURL, resp)
}

// transportError words a failure to get an answer.
func (c *Client) transportError(method, rawURL string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, ErrIdentity) {
		return fmt.Errorf("%s %s: %w (check wfmID and the WFM's SVID)", method, rawURL, err)
	}
	var uae x509.UnknownAuthorityError
	if errors.As(err, &uae) || strings.Contains(err.Error(), "x509svid:") {
		return fmt.Errorf("%s %s: %w: the WFM's certificate does not verify against the trust bundle: %v", method, rawURL, ErrIdentity, err)
	}
	return fmt.Errorf("%s %s: %w", method, rawURL, err)
}

// apiError reads an error answer: problem+json when it is one.
func (c *Client) apiError(method, rawURL string, resp *http.Response) error {
	e := &APIError{Method: method, URL: rawURL, Status: resp.StatusCode}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, spec.MaxProblemSize+1))
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == spec.ProblemMediaType || mt == "application/json" {
		if p, err := spec.ParseProblem(data); err == nil {
			e.Problem = p
		}
	}
	if e.Problem == nil && len(data) > 0 {
		e.Body = strings.ToValidUTF8(string(data[:min(len(data), 200)]), "?")
	}
	e.Retryable = retryableStatus(resp.StatusCode)
	e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), c.opts.Now())
	if p := e.Problem; p != nil {
		if p.Retryable != nil {
			e.Retryable = *p.Retryable
		}
		if p.RetryAfterSeconds != nil {
			e.RetryAfter = max(e.RetryAfter, time.Duration(min(*p.RetryAfterSeconds, 1<<31))*time.Second)
		}
		e.Backoff = p.BackoffStrategy
	}
	return e
}

// PutCapabilities sends the device's capabilities (PUT
// /api/v1/capabilities/{deviceId}); 200 and 201 are success.
func (c *Client) PutCapabilities(ctx context.Context, caps *spec.Capabilities) error {
	if err := caps.Validate(); err != nil {
		return err
	}
	body, err := json.Marshal(caps)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	u := c.resolve(pathCapabilities+url.PathEscape(caps.Properties.ID), false)
	resp, err := c.request(ctx, http.MethodPut, u, http.Header{"Content-Type": {"application/json"}}, body, http.StatusOK, http.StatusCreated, http.StatusNoContent)
	if err != nil {
		return fmt.Errorf("report capabilities: %w", err)
	}
	drain(resp)
	return nil
}

// PostStatus sends the status of one deployment (POST
// /api/v1/deployments/{id}/status); 200, 201 and 204 are success.
func (c *Client) PostStatus(ctx context.Context, st *spec.DeploymentStatus) error {
	if err := st.Validate(); err != nil {
		return err
	}
	body, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return c.postStatusBody(ctx, st.DeploymentID, body)
}

func (c *Client) postStatusBody(ctx context.Context, id string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	u := c.resolve(pathDeployments+"/"+url.PathEscape(id)+"/status", false)
	resp, err := c.request(ctx, http.MethodPost, u, http.Header{"Content-Type": {"application/json"}}, body, http.StatusOK, http.StatusCreated, http.StatusNoContent)
	if err != nil {
		return fmt.Errorf("report status of deployment %s: %w", id, err)
	}
	drain(resp)
	return nil
}

// drain reads a little of a successful answer's body and closes it, so the
// connection can be reused.
func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
