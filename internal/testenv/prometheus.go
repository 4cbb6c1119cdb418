package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"golang.org/x/crypto/bcrypt"
)

// PrometheusBinary is where Debian's prometheus package installs the
// server. StartPrometheus looks on PATH first.
const PrometheusBinary = "/usr/bin/prometheus"

// prometheusReadyTimeout bounds the wait for /-/ready.
const prometheusReadyTimeout = 60 * time.Second

// PrometheusOptions select a Prometheus variant. The zero value is plain
// HTTP without authentication and without an out-of-order window.
type PrometheusOptions struct {
	// TLS serves HTTPS with a certificate from a fresh test CA (CAFile).
	TLS bool
	// BasicAuth requires the random Username and Password (web config
	// basic_auth_users).
	BasicAuth bool
	// OutOfOrderWindow sets storage.tsdb.out_of_order_time_window: how far
	// behind the newest sample Prometheus still accepts samples, in or out
	// of order. Zero leaves it unset (Prometheus then accepts a sample only
	// when it is newer than its series' last one and within about an hour
	// of the head's newest sample).
	OutOfOrderWindow time.Duration
	// Args are extra command-line arguments.
	Args []string
}

// Prometheus is a running Debian prometheus (2.42) on a free port of
// 127.0.0.1 with --web.enable-remote-write-receiver, its TSDB, configuration
// and log in a test temp dir. It scrapes nothing: every sample it holds was
// remote-written.
type Prometheus struct {
	// Dir holds prometheus.yml, web.yml, certs/, data/ and prometheus.log.
	Dir string
	// DataDir is the TSDB; it survives Stop and Start.
	DataDir string
	// LogFile is the server's output, appended to across restarts.
	LogFile string
	// CAFile is the CA of the server certificate; empty without TLS.
	CAFile string
	// Username and Password are the basic-auth credentials; empty without
	// BasicAuth.
	Username, Password string

	t      testing.TB
	opts   PrometheusOptions
	caPool *x509.CertPool
	srv    *server
}

// StartPrometheus starts Debian's prometheus and waits until it is ready.
// It is stopped when the test ends. A missing binary fails the test with
// how to install it.
func StartPrometheus(t testing.TB, opts PrometheusOptions) *Prometheus {
	t.Helper()
	srv := newServer(t, "prometheus", "prometheus", prometheusFallback, "prometheus.log")
	dir := srv.dir
	p := &Prometheus{
		Dir: dir, DataDir: filepath.Join(dir, "data"), LogFile: srv.logFile,
		t: t, opts: opts, srv: srv,
	}
	if err := os.MkdirAll(filepath.Join(dir, "certs"), 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if opts.TLS {
		p.CAFile = filepath.Join(dir, "certs", "ca.pem")
		pool, err := writeTLSFiles(p.CAFile, p.certFile(), p.keyFile())
		if err != nil {
			t.Fatalf("testenv: generate Prometheus TLS files: %v", err)
		}
		p.caPool = pool
	}
	if opts.BasicAuth {
		p.Username, p.Password = "berth-"+randomHex(4), randomHex(16)
	}
	if err := p.writeConfig(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	srv.args = p.args
	srv.client = p.HTTPClient
	srv.readyWhat = "answering GET /-/ready"
	srv.probe = func(c *http.Client) error { return getOK(c, p.URL()+"/-/ready", http.StatusOK) }
	srv.readyTimeout = prometheusReadyTimeout
	srv.stopGrace = 20 * time.Second
	srv.startOnFreePort(nil)
	return p
}

// Host is "127.0.0.1:PORT".
func (p *Prometheus) Host() string { return p.srv.host() }

// URL is the server's base URL, http:// or https://.
func (p *Prometheus) URL() string {
	if p.opts.TLS {
		return "https://" + p.Host()
	}
	return "http://" + p.Host()
}

// WriteURL is the remote-write endpoint, URL + /api/v1/write.
func (p *Prometheus) WriteURL() string { return p.URL() + "/api/v1/write" }

// HTTPClient returns a client that trusts the server's CA and sends the
// basic-auth credentials, if any.
func (p *Prometheus) HTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if p.caPool != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: p.caPool, MinVersion: tls.VersionTLS12}
	}
	var rt http.RoundTripper = tr
	if p.Username != "" {
		rt = basicAuthTransport{next: tr, user: p.Username, pass: p.Password}
	}
	return &http.Client{Transport: rt, Timeout: 30 * time.Second}
}

type basicAuthTransport struct {
	next       http.RoundTripper
	user, pass string
}

func (b basicAuthTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.SetBasicAuth(b.user, b.pass)
	return b.next.RoundTrip(req)
}

// API returns a PromQL client of the server.
func (p *Prometheus) API() promv1.API {
	p.t.Helper()
	c, err := promapi.NewClient(promapi.Config{Address: p.URL(), Client: p.HTTPClient()})
	if err != nil {
		p.t.Fatalf("testenv: Prometheus client: %v", err)
	}
	return promv1.NewAPI(c)
}

// Query evaluates q at ts (now when zero) and fails the test on an error or
// a warning. The result is a vector, matrix or scalar.
func (p *Prometheus) Query(q string, ts time.Time) model.Value {
	p.t.Helper()
	if ts.IsZero() {
		ts = time.Now()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, warns, err := p.API().Query(ctx, q, ts)
	if err != nil {
		p.t.Fatalf("testenv: query %s: %v", q, err)
	}
	if len(warns) > 0 {
		p.t.Fatalf("testenv: query %s: warnings %v", q, warns)
	}
	return v
}

// Vector evaluates q now and returns its vector.
func (p *Prometheus) Vector(q string) model.Vector {
	p.t.Helper()
	v := p.Query(q, time.Time{})
	vec, ok := v.(model.Vector)
	if !ok {
		p.t.Fatalf("testenv: query %s: want a vector, got %s", q, v.Type())
	}
	return vec
}

// Matrix evaluates q (a range selector such as m[1h]) now and returns the
// raw samples.
func (p *Prometheus) Matrix(q string) model.Matrix {
	p.t.Helper()
	v := p.Query(q, time.Time{})
	m, ok := v.(model.Matrix)
	if !ok {
		p.t.Fatalf("testenv: query %s: want a matrix, got %s", q, v.Type())
	}
	return m
}

// Stop ends the server (SIGTERM, then SIGKILL after 20 seconds) and waits
// for it. Its data stays for Start. Stopping a stopped server does nothing.
func (p *Prometheus) Stop() { p.srv.stop() }

// Start starts a stopped server again on the same port with the same data.
func (p *Prometheus) Start() {
	p.t.Helper()
	p.srv.restart()
}

// args is the command line of the server.
func (p *Prometheus) args() []string {
	args := []string{
		"--config.file=" + filepath.Join(p.Dir, "prometheus.yml"),
		"--web.config.file=" + filepath.Join(p.Dir, "web.yml"),
		"--storage.tsdb.path=" + p.DataDir,
		"--web.listen-address=" + p.Host(),
		"--web.enable-remote-write-receiver",
		"--storage.tsdb.retention.time=2d",
		"--log.level=info",
	}
	return append(args, p.opts.Args...)
}

func (p *Prometheus) certFile() string { return filepath.Join(p.Dir, "certs", "server.pem") }
func (p *Prometheus) keyFile() string  { return filepath.Join(p.Dir, "certs", "server-key.pem") }

// writeConfig writes prometheus.yml (no scrape jobs) and web.yml.
func (p *Prometheus) writeConfig() error {
	cfg := "global:\n  evaluation_interval: 1m\n"
	if w := p.opts.OutOfOrderWindow; w > 0 {
		cfg += fmt.Sprintf("storage:\n  tsdb:\n    out_of_order_time_window: %s\n", model.Duration(w))
	}
	if err := os.WriteFile(filepath.Join(p.Dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		return err
	}
	web := ""
	if p.opts.TLS {
		web += fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n", strconv.Quote(p.certFile()), strconv.Quote(p.keyFile()))
	}
	if p.opts.BasicAuth {
		hash, err := bcrypt.GenerateFromPassword([]byte(p.Password), bcrypt.MinCost)
		if err != nil {
			return err
		}
		web += fmt.Sprintf("basic_auth_users:\n  %s: %s\n", p.Username, strconv.Quote(string(hash)))
	}
	return os.WriteFile(filepath.Join(p.Dir, "web.yml"), []byte(web), 0o644)
}

// Log returns the server's output so far.
func (p *Prometheus) Log() string {
	data, _ := os.ReadFile(p.LogFile)
	return string(data)
}

// prometheusFallback is PrometheusBinary, a variable for tests.
var prometheusFallback = PrometheusBinary
