// Package margotest is a test double of a Margo Workload Fleet Manager
// (Management Interface 1.0.0-rc.3) and the SPIFFE certificate authority
// its tests need. It is a double for the WFM only: registries, Docker
// Engine and kube-apiserver stay the real ones in berth's tests.
//
// WFM serves the State Manifest, the ApplicationDeployment YAMLs and the
// bundle exactly as the spec describes them (strong ETag = digest of the
// body, 304 on If-None-Match, immutable content URLs, problem+json
// errors), over HTTPS/1.1 with mutual TLS: the device must present an
// X.509-SVID of the WFM's trust domain whose SPIFFE ID is
// spiffe://<td>/margo/wfm/<wfm-id>/client/<client-id>. It records every
// request, and validates every request body it receives (capabilities,
// status) against the rc.3 schemas — required fields, types, enums,
// patterns, no unknown fields — answering 400/422 problem+json and
// recording the violation when a body breaks them. Faults (error answers
// with Retry-After, altered or missing content, an outage) are injected by
// the test.
package margotest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a SPIFFE certificate authority of one trust domain: a self-signed
// root, the trust bundle's only anchor, that mints X.509-SVIDs.
type CA struct {
	TrustDomain string
	Cert        *x509.Certificate
	key         *ecdsa.PrivateKey
}

// NewCA makes a CA for the trust domain td (such as plant.example).
func NewCA(t testing.TB, td string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{Organization: []string{"berth margotest"}, CommonName: td + " root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: td}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{TrustDomain: td, Cert: cert, key: key}
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// BundlePEM is the trust bundle: the root certificate.
func (ca *CA) BundlePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// SVIDOptions change a minted SVID.
type SVIDOptions struct {
	// NotBefore and NotAfter default to an hour ago and a day ahead.
	NotBefore, NotAfter time.Time
	// Intermediate signs the leaf with an intermediate CA, presented in
	// the chain.
	Intermediate bool
	// ExtraURI adds a second URI SAN (an invalid SVID).
	ExtraURI string
	// CA marks the leaf as a CA (an invalid SVID).
	CA bool
}

// SVID is a minted certificate chain (leaf first) and its key, as PEM.
type SVID struct {
	CertPEM, KeyPEM []byte
	Leaf            *x509.Certificate
}

// Mint issues an X.509-SVID for the SPIFFE ID id (spiffe://td/path):
// ECDSA P-256, digitalSignature, exactly one URI SAN.
func (ca *CA) Mint(t testing.TB, id string, o SVIDOptions) SVID {
	t.Helper()
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(24 * time.Hour)
	}
	signer, signerKey := ca.Cert, ca.key
	var chain [][]byte
	if o.Intermediate {
		ikey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		itmpl := &x509.Certificate{
			SerialNumber: serial(t), Subject: pkix.Name{CommonName: "intermediate"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
			URIs: []*url.URL{{Scheme: "spiffe", Host: ca.TrustDomain}},
		}
		ider, err := x509.CreateCertificate(rand.Reader, itmpl, ca.Cert, &ikey.PublicKey, ca.key)
		if err != nil {
			t.Fatal(err)
		}
		icert, _ := x509.ParseCertificate(ider)
		signer, signerKey = icert, ikey
		chain = append(chain, ider)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	uris := []*url.URL{u}
	if o.ExtraURI != "" {
		x, _ := url.Parse(o.ExtraURI)
		uris = append(uris, x)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		NotBefore:    o.NotBefore, NotAfter: o.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  o.CA,
		URIs:                  uris,
	}
	if o.CA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, c := range chain {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return SVID{CertPEM: certPEM, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), Leaf: leaf}
}

// Files are the paths of an identity written by WriteIdentity.
type Files struct {
	Cert, Key, Bundle string
}

// WriteIdentity writes svid and the CA's bundle into dir as svid.pem,
// svid-key.pem and bundle.pem.
func (ca *CA) WriteIdentity(t testing.TB, dir string, svid SVID) Files {
	t.Helper()
	f := Files{Cert: filepath.Join(dir, "svid.pem"), Key: filepath.Join(dir, "svid-key.pem"), Bundle: filepath.Join(dir, "bundle.pem")}
	for _, w := range []struct {
		path string
		data []byte
	}{{f.Cert, svid.CertPEM}, {f.Key, svid.KeyPEM}, {f.Bundle, ca.BundlePEM()}} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(w.path, w.data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}
