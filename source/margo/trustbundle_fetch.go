package margo

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// DefaultTrustBundleRefresh is the refresh interval when neither the
// configuration nor the bundle's spiffe_refresh_hint gives one.
const DefaultTrustBundleRefresh = 5 * time.Minute

// maxDiscoverySize caps the /.well-known/margo document.
const maxDiscoverySize = 64 << 10

// TrustBundleOptions fetch the trust domain's bundle from the MIS (NOTES
// §5.2). The HTTPS of these calls is validated against CAFile, or else
// the identity's trust bundle file and the anchors in force, with the
// usual host name check: never trust-on-first-use.
type TrustBundleOptions struct {
	// URI is the trustBundleUri, https only.
	URI string
	// Discovery is an https://HOST[:PORT] whose /.well-known/margo names
	// the trustBundleUri (and the trust domain, which must be the
	// device's). One of URI and Discovery.
	Discovery string
	// Refresh is the refresh interval; 0: the bundle's
	// spiffe_refresh_hint (30s..24h), else DefaultTrustBundleRefresh.
	Refresh time.Duration
	// CAFile holds PEM anchors for the MIS's HTTPS certificate.
	CAFile string
	// CacheFile is where the accepted bundle is kept (required).
	CacheFile string
}

func (o TrustBundleOptions) enabled() bool { return o.URI != "" || o.Discovery != "" }

// CheckTrustBundleURI checks a trustBundleUri or discovery URL: https,
// a host, no user info or fragment.
func CheckTrustBundleURI(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" {
		return fmt.Errorf("%q must be an https:// URL with a host (the trust bundle is never fetched over plain HTTP)", s)
	}
	return nil
}

// bundleFetcher keeps the trust bundle fresh.
type bundleFetcher struct {
	o    TrustBundleOptions
	c    *Client
	mu   sync.Mutex // one fetch at a time
	tmu  sync.Mutex // guards next
	next time.Time
}

func (f *bundleFetcher) due(now time.Time) bool {
	f.tmu.Lock()
	defer f.tmu.Unlock()
	return !now.Before(f.next)
}

func (f *bundleFetcher) schedule(at time.Time) {
	f.tmu.Lock()
	f.next = at
	f.tmu.Unlock()
}

// interval is the refresh interval after a bundle with hint.
func (f *bundleFetcher) interval(hint time.Duration) time.Duration {
	switch {
	case f.o.Refresh > 0:
		return f.o.Refresh
	case hint <= 0:
		return DefaultTrustBundleRefresh
	default:
		return min(max(hint, minRefreshHint), maxRefreshHint)
	}
}

// RefreshTrustBundle fetches the trust bundle now (when one is
// configured). On success a changed bundle replaces all anchors and the
// open connections are closed; on any failure the bundle in force stays
// and the error says why.
func (c *Client) RefreshTrustBundle(ctx context.Context) error {
	if c.tb == nil {
		return nil
	}
	c.tb.mu.Lock()
	defer c.tb.mu.Unlock()
	return c.tb.fetch(ctx)
}

// maybeRefreshTrustBundle fetches when a refresh is due; a failure is
// logged and retried after a minute at most.
func (c *Client) maybeRefreshTrustBundle(ctx context.Context) {
	f := c.tb
	if f == nil || !f.due(c.opts.Now()) || !f.mu.TryLock() {
		return
	}
	defer f.mu.Unlock()
	if err := f.fetch(ctx); err != nil {
		c.log.Warn("Margo trust bundle refresh failed; the bundle in force stays", "error", err)
		f.schedule(c.opts.Now().Add(min(f.interval(0), time.Minute)))
	}
}

func (f *bundleFetcher) fetch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, f.c.opts.Timeout)
	defer cancel()
	hc, err := f.httpClient()
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	f.c.id.mu.RLock()
	cur := f.c.id.current
	f.c.id.mu.RUnlock()
	td := cur.svid.ID.TrustDomain()
	uri := f.o.URI
	if uri == "" {
		if uri, err = f.discover(ctx, hc, td.Name()); err != nil {
			return err
		}
	}
	cache, _, err := readBundleCache(f.o.CacheFile, td)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	req.Header.Set("User-Agent", f.c.opts.UserAgent)
	if cache != nil && cache.URI == uri && cache.ETag != "" {
		req.Header.Set("If-None-Match", cache.ETag)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("trust bundle %s: %w", uri, err)
	}
	defer resp.Body.Close()
	now := f.c.opts.Now()
	if resp.StatusCode == http.StatusNotModified && cache != nil {
		hint := time.Duration(0)
		if _, tb, err := readBundleCache(f.o.CacheFile, td); err == nil && tb != nil {
			hint = tb.RefreshHint
		}
		f.schedule(now.Add(f.interval(hint)))
		return nil
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("trust bundle %s: the MIS answered %s", uri, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxTrustBundleSize+1))
	if err != nil {
		return fmt.Errorf("trust bundle %s: %w", uri, err)
	}
	tb, err := ParseTrustBundle(data)
	if err != nil {
		return fmt.Errorf("trust bundle %s: %w (the bundle in force stays)", uri, err)
	}
	if tb.Sequence < cur.seq {
		return fmt.Errorf("trust bundle %s: %w: spiffe_sequence %d is lower than the accepted %d (the bundle in force stays)", uri, ErrTrustBundleRegression, tb.Sequence, cur.seq)
	}
	if _, _, err := x509svid.Verify(cur.svid.Certificates, tb.x509Bundle(td), x509svid.WithTime(now)); err != nil {
		return fmt.Errorf("trust bundle %s: %w: the device's own SVID %s does not chain to its anchors, so the device could not authenticate with it; refused (renew the SVID under the new anchors first): %v", uri, ErrInvalidTrustBundle, cur.svid.ID, err)
	}
	nc := &bundleCache{TrustDomain: td.Name(), URI: uri, ETag: resp.Header.Get("ETag"), Fetched: now.UTC(), Bundle: json.RawMessage(data)}
	if err := nc.write(f.o.CacheFile); err != nil {
		return fmt.Errorf("trust bundle %s: cache: %w", uri, err)
	}
	f.schedule(now.Add(f.interval(tb.RefreshHint)))
	f.c.log.Info("Margo trust bundle accepted", "uri", uri, "sequence", tb.Sequence, "anchors", len(tb.Anchors))
	// The identity reload sees the new cache file, replaces the anchors
	// and closes the open connections, so the next handshake uses them.
	f.c.refreshIdentity()
	return nil
}

// discover reads /.well-known/margo.
func (f *bundleFetcher) discover(ctx context.Context, hc *http.Client, td string) (string, error) {
	u := strings.TrimSuffix(f.o.Discovery, "/") + "/.well-known/margo"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", f.c.opts.UserAgent)
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("Margo discovery %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("Margo discovery %s: the MIS answered %s", u, resp.Status)
	}
	var doc struct {
		TrustDomain    string `json:"trustDomain"`
		TrustBundleURI string `json:"trustBundleUri"`
	}
	// Unknown members are ignored, as the spec says.
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxDiscoverySize)).Decode(&doc); err != nil {
		return "", fmt.Errorf("Margo discovery %s: %w", u, err)
	}
	if doc.TrustDomain != td {
		return "", fmt.Errorf("Margo discovery %s: %w: the trust domain is %q, the device's SVID is of %q", u, ErrIdentity, doc.TrustDomain, td)
	}
	if err := CheckTrustBundleURI(doc.TrustBundleURI); err != nil {
		return "", fmt.Errorf("Margo discovery %s: trustBundleUri %w", u, err)
	}
	return doc.TrustBundleURI, nil
}

// httpClient is an HTTPS client validating the MIS against CAFile, or
// the bootstrap file's anchors and those in force.
func (f *bundleFetcher) httpClient() (*http.Client, error) {
	pool := x509.NewCertPool()
	if f.o.CAFile != "" {
		pem, err := readCapped(f.o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("trust bundle caFile: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("trust bundle caFile %s: no PEM certificate", f.o.CAFile)
		}
	} else {
		f.c.id.mu.RLock()
		cur := f.c.id.current
		f.c.id.mu.RUnlock()
		for _, a := range cur.bundle.X509Authorities() {
			pool.AddCert(a)
		}
		if data, err := readCapped(f.c.opts.Identity.TrustBundleFile); err == nil {
			if b, err := parseBundle(cur.svid.ID.TrustDomain(), data); err == nil {
				for _, a := range b.X509Authorities() {
					pool.AddCert(a)
				}
			}
		}
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 15 * time.Second,
	}
	return &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme != "https" || len(via) > 5 {
			return errors.New("trust bundle: redirect refused (https only, at most 5)")
		}
		return nil
	}}, nil
}

// CheckAnchorsFile checks that path holds PEM certificates (the caFile of
// the MIS's HTTPS).
func CheckAnchorsFile(path string) error {
	data, err := readCapped(path)
	if err != nil {
		return err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		return fmt.Errorf("%s holds no PEM certificate", path)
	}
	return nil
}

func readCapped(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	return io.ReadAll(io.LimitReader(fh, maxIdentityFile))
}
