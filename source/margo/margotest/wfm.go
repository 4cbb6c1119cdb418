package margotest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// Media types served.
const (
	ManifestType = "application/vnd.margo.manifest.v1+json"
	BundleType   = "application/vnd.margo.bundle.v1+tar+gzip"
	problemType  = "application/problem+json"
	problemBase  = "https://docs.margo.org/specification/problem-types#"
)

// Options configure a WFM.
type Options struct {
	// TrustDomain of the WFM and its clients. Default plant.example.
	TrustDomain string
	// Name is the <wfm-id>. Default line-3.
	Name string
	// ServerCA, when set, signs the WFM's SVID instead of the clients' CA
	// (a WFM the device must not trust).
	ServerCA *CA
	// ServerID, when set, replaces the WFM's SPIFFE ID in its SVID (a WFM
	// with the wrong identity).
	ServerID string
	// AllowTLS12 lets the server accept TLS 1.2; default TLS 1.3 only.
	AllowTLS12 bool
	// MaxTLS12 makes the server speak TLS 1.2 at most.
	MaxTLS12 bool
	// LegacyTLS makes the server speak TLS 1.0 and 1.1 only (a server the
	// spec forbids).
	LegacyTLS bool
	// HTTP2 lets the server offer HTTP/2 by ALPN (a client must still
	// speak HTTP/1.1).
	HTTP2 bool
	// ServerSVID changes the WFM's SVID (expired, two URI SANs, a CA: an
	// SVID a device must refuse).
	ServerSVID SVIDOptions
	// Gzip compresses the 200 answers to GETs that accept gzip
	// (Content-Encoding; digests are over the decoded bytes).
	Gzip bool
}

// Request is a request the WFM received.
type Request struct {
	Method, Path string
	// Proto is the HTTP version, such as HTTP/1.1.
	Proto  string
	Header http.Header
	// Client is the SPIFFE ID of the device.
	Client string
	Body   []byte
	// Status is what the WFM answered, Encoding its Content-Encoding.
	Status   int
	Encoding string
	Time     time.Time
	// TLSVersion is the TLS version of the connection, ALPN the protocol
	// negotiated, Resumed whether the session was resumed.
	TLSVersion uint16
	ALPN       string
	Resumed    bool
	// ClientChain is what the device presented, leaf first.
	ClientChain []*x509.Certificate
}

// Fault is an error answer injected for requests matching Method and Path
// (a prefix), Count times (0: until cleared).
type Fault struct {
	Method, Path string
	Count        int
	Status       int
	// Problem is the problem+json body; nil: an about:blank problem of
	// Status with Margo's retry members.
	Problem map[string]any
	// RetryAfter is the Retry-After header.
	RetryAfter string
}

// WFM is a running test WFM.
type WFM struct {
	// URL is the base URL, https://127.0.0.1:PORT.
	URL string
	// CA is the trust domain's authority; it mints the clients' SVIDs.
	CA *CA
	// ID is the WFM's SPIFFE ID, spiffe://<td>/margo/wfm/<name>.
	ID string

	t    testing.TB
	srv  *httptest.Server
	gzip bool

	certMu     sync.Mutex
	serverID   string
	serverOpts SVIDOptions
	cert       tls.Certificate // the WFM's SVID, as served
	handshakes int             // TLS handshakes begun (ClientHellos)

	mu           sync.Mutex
	manifest     []byte
	etag         string
	content      map[string][]byte // YAMLs by digest (kept forever: immutable URLs)
	contentOwner map[string]string // digest -> deployment id
	bundles      map[string][]byte
	corrupt      map[string][]byte
	gone         map[string]bool
	faults       []*Fault
	retired      map[string]bool
	requests     []Request
	violations   []string
	caps         map[string][]byte
	statuses     []Status
}

// Status is a status post received, decoded.
type Status struct {
	DeploymentID           string
	DeviceID               string
	AdoptedManifestVersion uint64
	State                  string
	Error                  map[string]any
	Components             []ComponentState
	Raw                    []byte
}

// ComponentState is one component of a status post.
type ComponentState struct {
	Name, State string
	Error       map[string]any
}

// Start runs a WFM until the test ends.
func Start(t testing.TB, o Options) *WFM {
	t.Helper()
	if o.TrustDomain == "" {
		o.TrustDomain = "plant.example"
	}
	if o.Name == "" {
		o.Name = "line-3"
	}
	ca := NewCA(t, o.TrustDomain)
	w := &WFM{
		CA: ca, ID: "spiffe://" + o.TrustDomain + "/margo/wfm/" + o.Name, t: t, gzip: o.Gzip,
		content: map[string][]byte{}, contentOwner: map[string]string{}, bundles: map[string][]byte{},
		corrupt: map[string][]byte{}, gone: map[string]bool{}, retired: map[string]bool{}, caps: map[string][]byte{},
	}
	serverID := w.ID
	if o.ServerID != "" {
		serverID = o.ServerID
	}
	signer := ca
	if o.ServerCA != nil {
		signer = o.ServerCA
	}
	w.serverID, w.serverOpts = serverID, o.ServerSVID
	w.Reissue(signer)
	td := spiffeid.RequireTrustDomainFromString(o.TrustDomain)
	bundle := x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.Cert})
	prefix := w.ID + "/client/"
	authorize := func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if !strings.HasPrefix(id.String(), prefix) || strings.Contains(strings.TrimPrefix(id.String(), prefix), "/") {
			return fmt.Errorf("margotest: %s is not a client of %s", id, w.ID)
		}
		return nil
	}
	cfg := tlsconfig.MTLSServerConfig(nil, bundle, authorize)
	cfg.MinVersion = tls.VersionTLS13
	if o.AllowTLS12 || o.MaxTLS12 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if o.MaxTLS12 {
		cfg.MaxVersion = tls.VersionTLS12
	}
	if o.LegacyTLS {
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	}
	if o.HTTP2 {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	w.srv = httptest.NewUnstartedServer(http.HandlerFunc(w.serve))
	// httptest adds its own certificate when Certificates is empty, and
	// GetCertificate is not asked without SNI: each handshake gets a
	// configuration with the SVID in force (Reissue changes it).
	cfg.GetCertificate = nil
	w.srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := cfg.Clone()
		w.certMu.Lock()
		c.Certificates = []tls.Certificate{w.cert}
		w.handshakes++
		w.certMu.Unlock()
		return c, nil
	}, Certificates: []tls.Certificate{w.cert}}
	w.srv.EnableHTTP2 = o.HTTP2
	w.srv.Config.ErrorLog = nil
	w.srv.StartTLS()
	w.URL = w.srv.URL
	t.Cleanup(w.srv.Close)
	w.Publish(1) // an empty manifest until the test publishes one
	return w
}

// Reissue re-issues the WFM's SVID under signer (a rotated anchor of the
// trust domain); new connections get it.
func (w *WFM) Reissue(signer *CA) {
	s := signer.Mint(w.t, w.serverID, w.serverOpts)
	// Not parsed as an SVID: the options may make an invalid one on purpose.
	cert, err := tls.X509KeyPair(s.CertPEM, s.KeyPEM)
	if err != nil {
		w.t.Fatal(err)
	}
	cert.Leaf = s.Leaf
	w.certMu.Lock()
	w.cert = cert
	w.certMu.Unlock()
}

// Handshakes returns the number of TLS handshakes clients began (each new
// connection, resumed or not).
func (w *WFM) Handshakes() int {
	w.certMu.Lock()
	defer w.certMu.Unlock()
	return w.handshakes
}

// ServerCert returns the WFM's SVID leaf in force.
func (w *WFM) ServerCert() *x509.Certificate {
	w.certMu.Lock()
	defer w.certMu.Unlock()
	return w.cert.Leaf
}

// ClientSVID mints an SVID for the client name of this WFM.
func (w *WFM) ClientSVID(t testing.TB, name string, o SVIDOptions) SVID {
	return w.CA.Mint(t, w.ID+"/client/"+name, o)
}

// ClientFiles mints an SVID for client name and writes the identity files
// into dir.
func (w *WFM) ClientFiles(t testing.TB, dir, name string) Files {
	return w.CA.WriteIdentity(t, dir, w.ClientSVID(t, name, SVIDOptions{}))
}

// Digest returns the sha256 digest string of data.
func Digest(data []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(data)) }

// Publish makes the manifest of version list the deployments yamls (each
// an ApplicationDeployment whose top-level id, or metadata.annotations.id,
// names it), with the bundle of all of them.
func (w *WFM) Publish(version uint64, yamls ...[]byte) {
	w.t.Helper()
	type ref struct {
		DeploymentID string `json:"deploymentId"`
		Digest       string `json:"digest"`
		SizeBytes    int    `json:"sizeBytes"`
		URL          string `json:"url"`
	}
	refs := []ref{}
	var files []bundleEntry
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, y := range yamls {
		id := deploymentID(y)
		if id == "" {
			w.t.Fatalf("margotest: no id in deployment YAML:\n%s", y)
		}
		d := Digest(y)
		w.content[d] = slices.Clone(y)
		w.contentOwner[d] = id
		refs = append(refs, ref{DeploymentID: id, Digest: d, SizeBytes: len(y), URL: "/api/v1/deployments/" + id + "/" + d})
		files = append(files, bundleEntry{name: id + ".yaml", data: y})
	}
	m := map[string]any{"manifestVersion": version, "deployments": refs, "bundle": nil}
	if len(yamls) > 0 {
		b := tarGz(w.t, files)
		bd := Digest(b)
		w.bundles[bd] = b
		m["bundle"] = map[string]any{"mediaType": BundleType, "digest": bd, "sizeBytes": len(b), "url": "/api/v1/bundles/" + bd}
	}
	raw, err := json.Marshal(m)
	if err != nil {
		w.t.Fatal(err)
	}
	w.manifest, w.etag = raw, `"`+Digest(raw)+`"`
}

// PublishManifest serves raw as the manifest, as it is.
func (w *WFM) PublishManifest(raw []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.manifest, w.etag = raw, `"`+Digest(raw)+`"`
}

// AddContent serves data under the content URLs of id and its digest, as
// Publish does, without listing it in the manifest.
func (w *WFM) AddContent(id string, data []byte) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := Digest(data)
	w.content[d], w.contentOwner[d] = data, id
	return d
}

// AddBundle serves data as a bundle, returning its digest.
func (w *WFM) AddBundle(data []byte) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := Digest(data)
	w.bundles[d] = data
	return d
}

// Corrupt serves data instead of the content of digest (a YAML or a
// bundle), with the same URL and ETag.
func (w *WFM) Corrupt(digest string, data []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.corrupt[digest] = data
}

// Forget answers 404 for the content of digest.
func (w *WFM) Forget(digest string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.gone[digest] = true
}

// Fail injects a fault.
func (w *WFM) Fail(f Fault) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.faults = append(w.faults, &f)
}

// ClearFaults removes the faults.
func (w *WFM) ClearFaults() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.faults = nil
}

// Retire makes the WFM refuse the client name (403 not-authorized).
func (w *WFM) Retire(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.retired[w.ID+"/client/"+name] = true
}

// Requests returns the requests received so far.
func (w *WFM) Requests() []Request {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.requests)
}

// Violations returns the schema violations found in request bodies.
func (w *WFM) Violations() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.violations)
}

// Statuses returns the status posts accepted, in order.
func (w *WFM) Statuses() []Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.statuses)
}

// Capabilities returns the last capabilities accepted for deviceID.
func (w *WFM) Capabilities(deviceID string) (map[string]any, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	raw, ok := w.caps[deviceID]
	if !ok {
		return nil, false
	}
	var m map[string]any
	json.Unmarshal(raw, &m)
	return m, true
}

// ManifestETag returns the ETag of the current manifest.
func (w *WFM) ManifestETag() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.etag
}

type bundleEntry struct {
	name string
	data []byte
}

// tarGz writes a deterministic tar+gzip of files at its root.
func tarGz(t testing.TB, files []bundleEntry) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write(f.data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	gz.Close()
	return buf.Bytes()
}

// TarGz is the bundle format: a tar+gzip with files (name to content) at
// its root, in the order given by names.
func TarGz(t testing.TB, names []string, files map[string][]byte) []byte {
	var list []bundleEntry
	for _, n := range names {
		list = append(list, bundleEntry{name: n, data: files[n]})
	}
	return tarGz(t, list)
}

// deploymentID finds the top-level id (or metadata.annotations.id) of a
// deployment YAML without a full parse: the double must not share the
// client's parser.
func deploymentID(y []byte) string {
	for _, line := range strings.Split(string(y), "\n") {
		if v, ok := strings.CutPrefix(line, "id: "); ok {
			return strings.Trim(strings.TrimSpace(v), `"'`)
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "id: "); ok && strings.HasPrefix(line, "    ") {
			return strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return ""
}
