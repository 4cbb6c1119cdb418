package margo

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/source/margo/margotest"
)

// TestTransportVersions: HTTPS over HTTP/1.1 with TLS 1.3 by default, 1.2
// only when allowed and only when the WFM cannot do 1.3, nothing older
// even when 1.2 is allowed, and HTTP/1.1 even with a WFM offering HTTP/2.
func TestTransportVersions(t *testing.T) {
	tests := []struct {
		name     string
		wo       margotest.Options
		allow12  bool
		wantErr  string
		wantVers uint16
	}{
		{name: "1.3 by default", wo: margotest.Options{AllowTLS12: true}, wantVers: tls.VersionTLS13},
		{name: "1.3 preferred when 1.2 is allowed", wo: margotest.Options{AllowTLS12: true}, allow12: true, wantVers: tls.VersionTLS13},
		{name: "1.2 fallback when allowed", wo: margotest.Options{MaxTLS12: true}, allow12: true, wantVers: tls.VersionTLS12},
		{name: "1.2 refused by default", wo: margotest.Options{MaxTLS12: true}, wantErr: "protocol version"},
		{name: "1.0/1.1 refused", wo: margotest.Options{LegacyTLS: true}, wantErr: "protocol version"},
		{name: "1.0/1.1 refused when 1.2 is allowed", wo: margotest.Options{LegacyTLS: true}, allow12: true, wantErr: "protocol version"},
		{name: "HTTP/1.1 with a WFM offering HTTP/2", wo: margotest.Options{HTTP2: true}, wantVers: tls.VersionTLS13},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.wo, func(o *Options) { o.AllowTLS12 = tt.allow12 })
			_, err := f.c.Poll(ctx(t), &State{})
			reqs := f.wfm.Requests()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if len(reqs) != 0 {
					t.Errorf("a request reached the WFM: %+v", reqs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(reqs) == 0 {
				t.Fatal("no request reached the WFM")
			}
			for _, r := range reqs {
				// ALPN happens only with a WFM offering protocols.
				if r.TLSVersion != tt.wantVers || r.Proto != "HTTP/1.1" || (tt.wo.HTTP2 && r.ALPN != "http/1.1") || r.ALPN == "h2" {
					t.Errorf("%s %s over TLS %#x, %s, ALPN %q; want TLS %#x, HTTP/1.1", r.Method, r.Path, r.TLSVersion, r.Proto, r.ALPN, tt.wantVers)
				}
			}
		})
	}
	// A WFM URL without a port is port 443; only https is accepted.
	for _, u := range []string{"http://wfm.plant.local", "wfm.plant.local", "https://user:pw@wfm.plant.local"} {
		if _, err := New(Options{URL: u, DeviceID: "press-42", CacheDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "must be https://") {
			t.Errorf("New with URL %q: err = %v, want an https error", u, err)
		}
	}
}

// TestPresentsSVIDChain: the device presents its X.509-SVID with its
// intermediates (the WFM's bundle holds the root only), ECDSA P-256 with
// SHA-256; the WFM's P-256 SVID is validated.
func TestPresentsSVIDChain(t *testing.T) {
	w := margotest.Start(t, margotest.Options{})
	dir := t.TempDir()
	svid := w.ClientSVID(t, "press-42", margotest.SVIDOptions{Intermediate: true})
	files := w.CA.WriteIdentity(t, filepath.Join(dir, "id"), svid)
	c, err := New(Options{
		URL: w.URL, DeviceID: "press-42", CacheDir: filepath.Join(dir, "cache"), WFMID: w.ID, Timeout: 10 * time.Second,
		Identity: Identity{CertFile: files.Cert, KeyFile: files.Key, TrustBundleFile: files.Bundle},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Poll(ctx(t), &State{}); err != nil {
		t.Fatal(err)
	}
	reqs := w.Requests()
	if len(reqs) == 0 {
		t.Fatal("no request")
	}
	chain := reqs[0].ClientChain
	if len(chain) != 2 || !chain[0].Equal(svid.Leaf) || !chain[1].IsCA {
		t.Fatalf("the WFM saw a chain of %d certificates, want the leaf and its intermediate", len(chain))
	}
	for _, cert := range []*x509.Certificate{chain[0], w.ServerCert()} {
		pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() || cert.SignatureAlgorithm != x509.ECDSAWithSHA256 {
			t.Errorf("certificate %v: key %T, signature %v; want ECDSA P-256 with SHA-256", cert.URIs, cert.PublicKey, cert.SignatureAlgorithm)
		}
	}
	if reqs[0].Client != w.ID+"/client/press-42" {
		t.Errorf("client id %q", reqs[0].Client)
	}
}

// TestConnectionLifetime: connections are reused, but never past what
// vouches for them: the device reconnects (a new full handshake, never a
// resumed session) after renewing its own SVID, once its own SVID has
// expired, once the WFM's SVID has expired, and after accepting a new
// trust bundle; a 304 from the MIS keeps the connections.
func TestConnectionLifetime(t *testing.T) {
	f := newTBFixture(t, nil)
	st := &State{}
	poll := func(what string, newConn bool) {
		t.Helper()
		before := f.wfm.Handshakes()
		if _, err := f.c.Poll(ctx(t), st); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := f.wfm.Handshakes() - before; (got > 0) != newConn {
			t.Errorf("%s: %d new handshakes, want a new connection: %v", what, got, newConn)
		}
	}
	renew := func(notAfter time.Time) margotest.SVID {
		t.Helper()
		s := f.wfm.ClientSVID(t, "press-42", margotest.SVIDOptions{NotAfter: notAfter})
		writeFile(t, f.files.Cert, s.CertPEM)
		writeFile(t, f.files.Key, s.KeyPEM)
		later := time.Now().Add(time.Duration(f.wfm.Handshakes()+1) * time.Second)
		os.Chtimes(f.files.Cert, later, later)
		os.Chtimes(f.files.Key, later, later)
		return s
	}
	poll("first poll", true)
	poll("second poll", false)

	short := renew(time.Now().Add(2 * time.Hour))
	poll("after the device renewed its SVID", true)
	if last := f.wfm.Requests(); !last[len(last)-1].ClientChain[0].Equal(short.Leaf) {
		t.Error("the WFM did not get the renewed SVID")
	}
	poll("with the renewed SVID", false)

	f.clk.add(3 * time.Hour) // the device's SVID expired (the bundle is due again too: 304)
	poll("past the device's SVID expiry", true)

	renew(time.Now().Add(72 * time.Hour))
	poll("after the second renewal", true)
	poll("with the second renewal", false)

	f.clk.add(22 * time.Hour) // 25h: past the WFM's SVID (24h), not the device's (72h)
	poll("past the WFM's SVID expiry", true)

	// A new bundle (higher sequence) replaces the anchors: reconnect. The
	// fixture's clock stays put from here, so only the bundle counts.
	f1 := f
	f = newTBFixture(t, nil) // its MIS serves the WFM CA's bundle, sequence 1
	st = &State{}
	poll("first poll (bundle fetched)", true)
	poll("bundle not due", false)
	f.clk.add(2 * time.Hour)
	poll("bundle due, 304", false)
	f.mis.SetBundle(margotest.BundleJSON(2, 3600, f.wfm.CA, margotest.NewCA(t, "plant.example")))
	f.clk.add(2 * time.Hour)
	poll("new bundle accepted", true)
	if f.c.Identity().Anchors != 2 {
		t.Errorf("anchors = %d, want the new bundle's 2", f.c.Identity().Anchors)
	}
	for _, r := range append(f1.wfm.Requests(), f.wfm.Requests()...) {
		if r.Resumed {
			t.Errorf("%s %s on a resumed TLS session", r.Method, r.Path)
		}
	}
}
