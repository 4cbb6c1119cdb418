package testenv

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// RegistryBinary is where Debian's docker-registry package installs the
// distribution registry. StartRegistry looks on PATH first.
const RegistryBinary = "/usr/bin/docker-registry"

// registryReadyTimeout bounds how long StartRegistry and Registry.Start wait
// for GET /v2/ to answer.
const registryReadyTimeout = 15 * time.Second

// RegistryOptions selects a registry variant. The zero value is the default:
// HTTPS with a test CA, and htpasswd basic authentication.
type RegistryOptions struct {
	// Plain serves plain HTTP instead of HTTPS. CAFile is then empty.
	Plain bool
	// NoAuth turns authentication off. Username and Password are then empty
	// and DockerConfig holds no credentials.
	NoAuth bool
	// IP is the address to listen on; default 127.0.0.1. A test that puts
	// a client in another network namespace (see NewNetns) listens on the
	// host end of its veth pair. The certificate is valid for it too.
	IP string
}

// Registry is a running Debian docker-registry (distribution 2.8) on
// 127.0.0.1, with its storage, configuration and log in a test temp dir.
//
// The log file holds both of the registry's output streams. Its access log
// (stdout) has one line for every request in Apache combined log format,
// which Requests and RequestCount parse:
//
//	127.0.0.1 - - [22/Nov/2026:01:42:02 +0000] "GET /v2/ HTTP/1.1" 401 87 "" "berth/0.1"
//
// that is: remote host, ident, user, [time], "method request-URI protocol",
// status, response size, "referer", "user agent". The application log
// (stderr, logrus text format, "time=... level=... msg=...") and the lines
// "# testenv: ..." that StartRegistry writes before every start are not
// requests and are not counted.
type Registry struct {
	// Dir is the registry's own temp dir: config.yml, htpasswd, certs/,
	// storage/, docker/ and registry.log.
	Dir string
	// ConfigFile is the registry's config.yml.
	ConfigFile string
	// StorageDir is the filesystem storage root. It survives Stop and Start.
	StorageDir string
	// LogFile is the registry's log, appended to across restarts.
	LogFile string
	// CAFile is the PEM CA certificate the registry's server certificate
	// chains to; empty with Plain.
	CAFile string
	// Username and Password are the htpasswd credentials; empty with NoAuth.
	Username, Password string
	// DockerConfig is a Docker config.json whose "auths" holds the
	// credentials for Host (no entry with NoAuth).
	DockerConfig string
	// DockerConfigDir is DockerConfig's directory, for DOCKER_CONFIG.
	DockerConfigDir string

	opts   RegistryOptions
	caPool *x509.CertPool
	srv    *server
}

// StartRegistry starts Debian's docker-registry on a free port of 127.0.0.1
// and waits until it answers GET /v2/. By default it serves HTTPS with a
// certificate from a fresh test CA (CAFile) and requires the random htpasswd
// credentials in Username and Password. The registry is killed when the test
// ends. A missing docker-registry binary fails the test.
func StartRegistry(t testing.TB, opts RegistryOptions) *Registry {
	t.Helper()
	srv := newServer(t, "docker-registry", "docker-registry", registryFallback, "registry.log")
	dir := srv.dir
	r := &Registry{
		Dir:             dir,
		ConfigFile:      filepath.Join(dir, "config.yml"),
		StorageDir:      filepath.Join(dir, "storage"),
		LogFile:         srv.logFile,
		DockerConfigDir: filepath.Join(dir, "docker"),
		opts:            opts,
		srv:             srv,
	}
	r.DockerConfig = filepath.Join(r.DockerConfigDir, "config.json")
	for _, d := range []string{r.StorageDir, r.DockerConfigDir, filepath.Join(dir, "certs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	if opts.IP != "" {
		srv.ip = opts.IP
	}
	if !opts.Plain {
		r.CAFile = filepath.Join(dir, "certs", "ca.pem")
		pool, err := writeTLSFiles(r.CAFile, r.certFile(), r.keyFile(), net.ParseIP(srv.ip))
		if err != nil {
			t.Fatalf("testenv: generate registry TLS files: %v", err)
		}
		r.caPool = pool
	}
	if !opts.NoAuth {
		r.Username = "berth-" + randomHex(4)
		r.Password = randomHex(16)
		// The registry checks the hash on every request: the minimum cost
		// keeps that cheap, which is all a test needs.
		hash, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatalf("testenv: bcrypt: %v", err)
		}
		if err := os.WriteFile(r.htpasswdFile(), []byte(r.Username+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	srv.args = func() []string { return []string{"serve", r.ConfigFile} }
	srv.client = r.HTTPClient
	srv.readyWhat = "answering GET /v2/"
	srv.probe = func(c *http.Client) error {
		return getOK(c, r.URL()+"/v2/", http.StatusOK, http.StatusUnauthorized)
	}
	srv.readyTimeout = registryReadyTimeout
	srv.startOnFreePort(r.writeConfig)
	return r
}

// Host is the registry's "127.0.0.1:PORT" (or "IP:PORT"), as used in
// references.
func (r *Registry) Host() string { return r.srv.host() }

// Port is the port the registry listens on; it is kept across Stop and Start.
func (r *Registry) Port() int { return r.srv.port }

// URL is the registry's base URL: "https://127.0.0.1:PORT", or "http://"
// with Plain.
func (r *Registry) URL() string {
	if r.opts.Plain {
		return "http://" + r.Host()
	}
	return "https://" + r.Host()
}

// Ref is Host + "/" + repo (a repository, optionally with ":tag" or
// "@digest").
func (r *Registry) Ref(repo string) string { return r.Host() + "/" + strings.TrimPrefix(repo, "/") }

// Plain reports whether the registry serves plain HTTP.
func (r *Registry) Plain() bool { return r.opts.Plain }

// HTTPClient returns a new client (with its own transport and no kept-alive
// connections yet) that trusts the registry's CA and no other. It sends no
// credentials by itself.
func (r *Registry) HTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if r.caPool != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: r.caPool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// CertPool returns the registry's CA as a pool; nil with Plain.
func (r *Registry) CertPool() *x509.CertPool { return r.caPool }

// Stop kills the registry (its whole process group) and waits for it to
// exit. New connections to Host are then refused; a client's kept-alive
// connections fail with EOF or a reset instead. Stopping a stopped registry
// does nothing.
func (r *Registry) Stop() { r.srv.stop() }

// Start starts a stopped registry again on the same port with the same
// storage, configuration and credentials, and waits until it answers.
// It fails the test if the registry is running.
func (r *Registry) Start() {
	r.srv.t.Helper()
	r.srv.restart()
}

func (r *Registry) certFile() string     { return filepath.Join(r.Dir, "certs", "server.pem") }
func (r *Registry) keyFile() string      { return filepath.Join(r.Dir, "certs", "server-key.pem") }
func (r *Registry) htpasswdFile() string { return filepath.Join(r.Dir, "htpasswd") }

// writeConfig writes config.yml and the Docker config.json for r.port.
func (r *Registry) writeConfig() error {
	q := strconv.Quote
	var b strings.Builder
	fmt.Fprintf(&b, "version: 0.1\n")
	fmt.Fprintf(&b, "log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n  fields:\n    service: registry\n")
	fmt.Fprintf(&b, "storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n", q(r.StorageDir))
	fmt.Fprintf(&b, "  maintenance:\n    uploadpurging:\n      enabled: false\n")
	fmt.Fprintf(&b, "http:\n  addr: %s\n  secret: %s\n", q(r.Host()), q(randomHex(16)))
	if !r.opts.Plain {
		fmt.Fprintf(&b, "  tls:\n    certificate: %s\n    key: %s\n", q(r.certFile()), q(r.keyFile()))
	}
	if !r.opts.NoAuth {
		fmt.Fprintf(&b, "auth:\n  htpasswd:\n    realm: berth-testenv\n    path: %s\n", q(r.htpasswdFile()))
	}
	if err := os.WriteFile(r.ConfigFile, []byte(b.String()), 0o644); err != nil {
		return err
	}

	type authEntry struct {
		Auth string `json:"auth"`
	}
	cfg := struct {
		Auths map[string]authEntry `json:"auths"`
	}{Auths: map[string]authEntry{}}
	if !r.opts.NoAuth {
		cfg.Auths[r.Host()] = authEntry{Auth: base64.StdEncoding.EncodeToString([]byte(r.Username + ":" + r.Password))}
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(r.DockerConfig, append(data, '\n'), 0o600)
}

// Request is one line of the registry's access log.
type Request struct {
	RemoteHost string // client address without port, e.g. "127.0.0.1"
	User       string // "-": the access log does not name basic-auth users
	Time       time.Time
	Method     string // "GET", "HEAD", "PUT", ...
	URI        string // request URI with query, e.g. "/v2/fleet/manifests/1.0.0"
	Proto      string // "HTTP/1.1"
	Status     int
	Size       int64 // response body bytes; 0 when logged as "-"
	Referer    string
	UserAgent  string
	Line       string // the whole log line
}

// accessLogLine matches the Apache combined log format that the registry's
// access log (gorilla/handlers.CombinedLoggingHandler) writes.
var accessLogLine = regexp.MustCompile(`^(\S+) (\S+) (\S+) \[([^\]]+)\] "(\S+) (\S+) ([^"]*)" (\d{3}) (\d+|-) "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"$`)

// Requests parses the access log lines of LogFile (all starts so far).
// A request whose response has just arrived may be logged a few
// milliseconds later: poll (see Eventually) when an exact count matters.
func (r *Registry) Requests() []Request {
	f, err := os.Open(r.LogFile)
	if err != nil {
		return nil
	}
	defer f.Close()
	return parseAccessLog(f)
}

func parseAccessLog(f io.Reader) []Request {
	var reqs []Request
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		if req, ok := parseAccessLogLine(sc.Text()); ok {
			reqs = append(reqs, req)
		}
	}
	return reqs
}

func parseAccessLogLine(line string) (Request, bool) {
	m := accessLogLine.FindStringSubmatch(line)
	if m == nil {
		return Request{}, false
	}
	status, _ := strconv.Atoi(m[8])
	size, _ := strconv.ParseInt(m[9], 10, 64)
	when, _ := time.Parse("02/Jan/2006:15:04:05 -0700", m[4])
	return Request{
		RemoteHost: m[1],
		User:       m[3],
		Time:       when,
		Method:     m[5],
		URI:        m[6],
		Proto:      m[7],
		Status:     status,
		Size:       size,
		Referer:    m[10],
		UserAgent:  m[11],
		Line:       line,
	}, true
}

// RequestCount counts the requests in the access log (see Registry) whose
// whole log line contains filterSubstring; "" counts every request. For
// example `"GET /v2/fleet/manifests/` counts manifest GETs of one
// repository, `" 401 ` the unauthenticated ones, `"HEAD ` every HEAD.
func (r *Registry) RequestCount(filterSubstring string) int {
	n := 0
	for _, req := range r.Requests() {
		if strings.Contains(req.Line, filterSubstring) {
			n++
		}
	}
	return n
}

// registryFallback is RegistryBinary, a variable for tests.
var registryFallback = RegistryBinary

func findRegistryBinary() string { return findBinary("docker-registry", registryFallback) }

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
