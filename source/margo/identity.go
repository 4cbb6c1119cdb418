package margo

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Identity names the files of the device's Margo identity, provisioned out
// of band by the operator.
type Identity struct {
	// CertFile is the device's X.509-SVID: PEM, leaf first, then the
	// intermediates (all are presented to the WFM).
	CertFile string
	// KeyFile is the SVID's private key (PEM, PKCS#8, EC or RSA).
	KeyFile string
	// TrustBundleFile holds the trust anchors of the trust domain: PEM
	// certificates, or a SPIFFE bundle (JWK Set with x509-svid keys, as
	// GET <trustBundleUri> serves it).
	TrustBundleFile string
	// BundleCacheFile, when set, is where the bundle fetched from the MIS
	// is kept (see TrustBundleOptions). When it exists and is newer than
	// TrustBundleFile, its anchors are the ones in force; an operator who
	// replaces TrustBundleFile out of band overrides it until the next
	// accepted fetch.
	BundleCacheFile string
}

// maxIdentityFile caps what is read of an identity file.
const maxIdentityFile = 1 << 20

// IdentityInfo describes a loaded identity, for --check-config and logs.
type IdentityInfo struct {
	// ClientID is the device's SPIFFE ID.
	ClientID string `json:"clientId"`
	// WFMID is the SPIFFE ID required of the WFM.
	WFMID string `json:"wfmId"`
	// NotAfter is when the device's SVID expires.
	NotAfter time.Time `json:"notAfter"`
	// Anchors is the number of trust anchors.
	Anchors int `json:"anchors"`
}

// loaded is one reading of the identity files.
type loaded struct {
	svid     *x509svid.SVID
	bundle   *x509bundle.Bundle
	wfmID    spiffeid.ID
	modTimes [4]time.Time
	// seq is the spiffe_sequence of the cached bundle (0: none).
	seq uint64
	// fromCache says the anchors are the cached bundle's.
	fromCache bool
}

// LoadIdentity reads and checks the identity files at time now: the SVID
// and its key match; the SVID is a leaf (not a CA, digitalSignature, no
// certificate or CRL signing) with exactly one spiffe:// URI SAN of the
// form spiffe://<td>/margo/wfm/<wfm-id>/client/<client-id>; the bundle has
// at least one X.509 anchor; the SVID chains to it and is valid at now.
// wfmID, when not empty, must be exactly spiffe://<td>/margo/wfm/<wfm-id>
// for the same <td> and <wfm-id>: the spec derives the WFM's identity from
// the device's own SVID, and a configured one that differs is an error.
func LoadIdentity(id Identity, wfmID string, now time.Time) (*IdentityInfo, error) {
	l, err := loadIdentity(id, wfmID, now)
	if err != nil {
		return nil, err
	}
	return l.info(), nil
}

func (l *loaded) info() *IdentityInfo {
	return &IdentityInfo{
		ClientID: l.svid.ID.String(),
		WFMID:    l.wfmID.String(),
		NotAfter: l.svid.Certificates[0].NotAfter,
		Anchors:  len(l.bundle.X509Authorities()),
	}
}

func loadIdentity(id Identity, wantWFM string, now time.Time) (*loaded, error) {
	var mods [4]time.Time
	read := func(i int, what, path string) ([]byte, error) {
		if path == "" {
			return nil, fmt.Errorf("%w: no %s file configured", ErrIdentity, what)
		}
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrIdentity, what, err)
		}
		if !fi.Mode().IsRegular() || fi.Size() > maxIdentityFile {
			return nil, fmt.Errorf("%w: %s %s is not a regular file of at most %d bytes", ErrIdentity, what, path, maxIdentityFile)
		}
		mods[i] = fi.ModTime()
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrIdentity, what, err)
		}
		return data, nil
	}
	certPEM, err := read(0, "SVID certificate", id.CertFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := read(1, "SVID key", id.KeyFile)
	if err != nil {
		return nil, err
	}
	bundleData, err := read(2, "trust bundle", id.TrustBundleFile)
	if err != nil {
		return nil, err
	}
	svid, err := x509svid.Parse(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: SVID %s with key %s: %v", ErrIdentity, id.CertFile, id.KeyFile, err)
	}
	wfm, err := wfmIDOf(svid.ID)
	if err != nil {
		return nil, fmt.Errorf("%w: SVID %s: %v", ErrIdentity, id.CertFile, err)
	}
	if wantWFM != "" {
		want, err := spiffeid.FromString(wantWFM)
		if err != nil {
			return nil, fmt.Errorf("%w: WFM SPIFFE ID %q: %v", ErrIdentity, wantWFM, err)
		}
		if want != wfm {
			return nil, fmt.Errorf("%w: the configured WFM SPIFFE ID %s does not match the device's SVID %s, which requires %s: fix wfmID or the SVID", ErrIdentity, want, svid.ID, wfm)
		}
	}
	bundle, err := parseBundle(svid.ID.TrustDomain(), bundleData)
	if err != nil {
		return nil, fmt.Errorf("%w: trust bundle %s: %v", ErrIdentity, id.TrustBundleFile, err)
	}
	l := &loaded{svid: svid, bundle: bundle, wfmID: wfm}
	bundleName := id.TrustBundleFile
	if id.BundleCacheFile != "" {
		if fi, err := os.Stat(id.BundleCacheFile); err == nil {
			mods[3] = fi.ModTime()
		}
		_, tb, err := readBundleCache(id.BundleCacheFile, svid.ID.TrustDomain())
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrIdentity, err)
		}
		if tb != nil {
			l.seq = tb.Sequence
			if !mods[3].Before(mods[2]) { // the cache unless the file was replaced since
				l.bundle, l.fromCache, bundleName = tb.x509Bundle(svid.ID.TrustDomain()), true, id.BundleCacheFile
			}
		}
	}
	if _, _, err := x509svid.Verify(svid.Certificates, l.bundle, x509svid.WithTime(now)); err != nil {
		return nil, fmt.Errorf("%w: SVID %s does not verify against the trust bundle %s at %s: %v", ErrIdentity, id.CertFile, bundleName, now.UTC().Format(time.RFC3339), err)
	}
	l.modTimes = mods
	return l, nil
}

// wfmIDOf returns spiffe://<td>/margo/wfm/<wfm-id> for a client SVID
// spiffe://<td>/margo/wfm/<wfm-id>/client/<client-id>.
func wfmIDOf(client spiffeid.ID) (spiffeid.ID, error) {
	seg := strings.Split(strings.TrimPrefix(client.Path(), "/"), "/")
	if len(seg) != 5 || seg[0] != "margo" || seg[1] != "wfm" || seg[3] != "client" {
		return spiffeid.ID{}, fmt.Errorf("SPIFFE ID %s is not a WFM client identity spiffe://<trust-domain>/margo/wfm/<wfm-id>/client/<client-id>", client)
	}
	return spiffeid.FromSegments(client.TrustDomain(), "margo", "wfm", seg[2])
}

// parseBundle reads PEM anchors or a SPIFFE bundle (JSON) for td; a bundle
// without X.509 anchors is refused (fail closed).
func parseBundle(td spiffeid.TrustDomain, data []byte) (*x509bundle.Bundle, error) {
	var b *x509bundle.Bundle
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		sb, err := spiffebundle.Parse(td, data)
		if err != nil {
			return nil, err
		}
		b = sb.X509Bundle()
	} else {
		var err error
		if b, err = x509bundle.Parse(td, data); err != nil {
			return nil, err
		}
	}
	if b.Empty() {
		return nil, fmt.Errorf("no X.509 trust anchor for %s", td)
	}
	return b, nil
}

// identitySource serves the current identity to TLS handshakes and reloads
// it when its files change.
type identitySource struct {
	files   Identity
	wfmID   string
	mu      sync.RWMutex
	current *loaded
}

var (
	_ x509svid.Source   = (*identitySource)(nil)
	_ x509bundle.Source = (*identitySource)(nil)
)

func (s *identitySource) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.current.svid, nil
}

func (s *identitySource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.current.bundle.GetX509BundleForTrustDomain(td)
}

func (s *identitySource) wfm() spiffeid.ID {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.current.wfmID
}

func (s *identitySource) notAfter() time.Time {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.current.svid.Certificates[0].NotAfter
}

// reload re-reads the files when one of them changed. It reports whether
// the identity changed; on error the current identity stays in force.
func (s *identitySource) reload(now time.Time) (bool, error) {
	s.mu.RLock()
	mods := s.current.modTimes
	s.mu.RUnlock()
	changed := false
	for i, p := range []string{s.files.CertFile, s.files.KeyFile, s.files.TrustBundleFile, s.files.BundleCacheFile} {
		if p == "" {
			continue
		}
		var mod time.Time
		fi, err := os.Stat(p)
		switch {
		case err == nil:
			mod = fi.ModTime()
		case i < 3 || !errors.Is(err, os.ErrNotExist):
			return false, fmt.Errorf("%w: %v", ErrIdentity, err)
		}
		changed = changed || !mod.Equal(mods[i])
	}
	if !changed {
		return false, nil
	}
	l, err := loadIdentity(s.files, s.wfmID, now)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	s.current = l
	s.mu.Unlock()
	return true, nil
}

// tlsConfig is the client TLS configuration: the device's SVID presented,
// the WFM's verified against the bundle and authorized by its exact SPIFFE
// ID, TLS 1.3 (1.2 with AEAD ECDHE suites only when allowed), no session
// tickets (a resumed session would outlive a rotated identity).
func (s *identitySource) tlsConfig(allowTLS12 bool) *tls.Config {
	authorize := func(actual spiffeid.ID, _ [][]*x509.Certificate) error {
		if want := s.wfm(); actual != want {
			return fmt.Errorf("%w: the server presented the SPIFFE ID %s, this device only talks to %s", ErrIdentity, actual, want)
		}
		return nil
	}
	cfg := tlsconfig.MTLSClientConfig(s, s, authorize)
	cfg.MinVersion = tls.VersionTLS13
	cfg.MaxVersion = tls.VersionTLS13
	if allowTLS12 {
		cfg.MinVersion = tls.VersionTLS12
		cfg.CipherSuites = []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		}
	}
	cfg.SessionTicketsDisabled = true
	cfg.NextProtos = []string{"http/1.1"}
	return cfg
}
