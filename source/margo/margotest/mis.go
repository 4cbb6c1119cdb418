package margotest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// MIS is a test double of the Margo "MIS" role (NOTES §5.2): it serves
// /.well-known/margo and a SPIFFE bundle at /bundle with a strong ETag and
// 304 on If-None-Match, over HTTPS with a certificate for 127.0.0.1 from
// the CA given (so the device validates it with its anchors and a host
// name check).
type MIS struct {
	// URL is https://127.0.0.1:PORT; BundleURI is URL + "/bundle".
	URL, BundleURI string

	srv         *httptest.Server
	mu          sync.Mutex
	trustDomain string
	body        []byte
	status      int
	hits        []string
}

// StartMIS runs a MIS until the test ends, its HTTPS certificate issued by
// ca for 127.0.0.1.
func StartMIS(t testing.TB, ca *CA) *MIS {
	t.Helper()
	m := &MIS{trustDomain: ca.TrustDomain}
	m.srv = httptest.NewUnstartedServer(http.HandlerFunc(m.serve))
	m.srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.ServerCert(t, "127.0.0.1")}, MinVersion: tls.VersionTLS12}
	m.srv.Config.ErrorLog = nil
	m.srv.StartTLS()
	t.Cleanup(m.srv.Close)
	m.URL, m.BundleURI = m.srv.URL, m.srv.URL+"/bundle"
	return m
}

// ServerCert issues a TLS server certificate for host (an IP or a DNS
// name), as a CA of the trust domain would for the MIS.
func (ca *CA) ServerCert(t testing.TB, host string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// BundleJSON is the SPIFFE bundle (JWK Set) with the CAs as x509-svid
// keys, and a jwt-svid key that a client must ignore.
func BundleJSON(seq uint64, hintSeconds int, cas ...*CA) []byte {
	keys := []map[string]any{}
	for _, ca := range cas {
		pub := ca.Cert.PublicKey.(*ecdsa.PublicKey)
		b, _ := pub.Bytes() // uncompressed point: 0x04 || X || Y
		n := (len(b) - 1) / 2
		keys = append(keys, map[string]any{
			"kty": "EC", "crv": pub.Curve.Params().Name, "use": "x509-svid",
			"x": base64.RawURLEncoding.EncodeToString(b[1 : 1+n]), "y": base64.RawURLEncoding.EncodeToString(b[1+n:]),
			"x5c": []string{base64.StdEncoding.EncodeToString(ca.Cert.Raw)},
		})
	}
	keys = append(keys, map[string]any{"kty": "EC", "crv": "P-256", "use": "jwt-svid", "kid": "jwt-1", "x": "AA", "y": "AA"})
	out, _ := json.Marshal(map[string]any{"spiffe_sequence": seq, "spiffe_refresh_hint": hintSeconds, "keys": keys})
	return out
}

// SetBundle sets the body served at /bundle (and answers 200 again).
func (m *MIS) SetBundle(body []byte) {
	m.mu.Lock()
	m.body, m.status = body, 0
	m.mu.Unlock()
}

// Fail makes /bundle answer status (0: serve the bundle again).
func (m *MIS) Fail(status int) {
	m.mu.Lock()
	m.status = status
	m.mu.Unlock()
}

// Hits returns "PATH STATUS" of every request.
func (m *MIS) Hits() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.hits...)
}

func (m *MIS) serve(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	code := http.StatusOK
	defer func() { m.hits = append(m.hits, fmt.Sprintf("%s %d", r.URL.Path, code)) }()
	switch r.URL.Path {
	case "/.well-known/margo":
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"trustDomain": m.trustDomain, "trustBundleUri": m.BundleURI, "x-extra": 1})
	case "/bundle":
		if m.status != 0 {
			code = m.status
			http.Error(w, "injected", code)
			return
		}
		etag := fmt.Sprintf(`"%x"`, sha256.Sum256(m.body))
		w.Header().Set("ETag", etag)
		if r.Header.Get("If-None-Match") == etag {
			code = http.StatusNotModified
			w.WriteHeader(code)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(m.body)
	default:
		code = http.StatusNotFound
		http.NotFound(w, r)
	}
}
