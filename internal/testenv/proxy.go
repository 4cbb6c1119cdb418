package testenv

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ProxyRequest is one request a Proxy received.
type ProxyRequest struct {
	Method string // "GET", "HEAD", "PUT", ...
	Path   string // URL path, e.g. "/v2/fleet/manifests/v1"
	Query  string // raw query without "?", e.g. "n=100&last=v9"
	// Status is the status code of the response; 0 while no response has
	// been started (the request is recorded as soon as it arrives), and 502
	// when the registry could not be reached.
	Status int
	Time   time.Time // when the request arrived
}

// Proxy is a counting reverse proxy in front of a Registry, to count the
// requests a client makes ("an unchanged poll makes exactly one request")
// and to make the registry unreachable for clients without stopping it.
//
// It listens on 127.0.0.1 with TLS, presenting the registry's own server
// certificate (signed by the registry's test CA, valid for 127.0.0.1), so
// clients keep trusting Registry.CAFile; in front of a Plain registry it
// serves plain HTTP. Everything is forwarded to the registry unchanged,
// Host and Authorization headers included, so the registry's htpasswd
// authentication applies; Location headers that name the registry are
// rewritten to name the proxy. Credentials for Proxy.Host come from
// Registry.DockerConfigFor.
//
// Every request is recorded the moment it arrives, before it is forwarded,
// so that once a client has its response the request is counted.
type Proxy struct {
	reg       *Registry
	t         testing.TB
	port      int
	tlsConfig *tls.Config // nil for a Plain registry
	transport *http.Transport
	proxy     *httputil.ReverseProxy

	mu       sync.Mutex
	srv      *http.Server // nil while stopped
	reqs     []*ProxyRequest
	tagsPage int // PaginateTags' page size; 0 forwards tags/list
	fault    fault
	// intercept, when set, sees every request first and answers it itself
	// when it returns true (see Intercept).
	intercept func(http.ResponseWriter, *http.Request) bool
}

// StartProxy starts a Proxy for reg on a free port of 127.0.0.1. It is
// stopped when the test ends.
func StartProxy(t testing.TB, reg *Registry) *Proxy {
	t.Helper()
	p := &Proxy{reg: reg, t: t}
	if !reg.Plain() {
		cert, err := tls.LoadX509KeyPair(reg.certFile(), reg.keyFile())
		if err != nil {
			t.Fatalf("testenv: proxy: load the registry's certificate: %v", err)
		}
		p.tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	p.transport = reg.HTTPClient().Transport.(*http.Transport)
	target, err := url.Parse(reg.URL())
	if err != nil {
		t.Fatalf("testenv: proxy: %v", err)
	}
	p.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			// Keep the client's Host: the registry builds the Location
			// of blob uploads from it, so they name the proxy.
			pr.Out.Host = pr.In.Host
		},
		Transport:      p.transport,
		ModifyResponse: p.rewriteLocation,
		ErrorLog:       discardLog,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, "testenv proxy: "+err.Error(), http.StatusBadGateway)
		},
	}
	t.Cleanup(func() {
		p.Stop()
		p.transport.CloseIdleConnections()
	})

	const attempts = 5
	for i := 1; ; i++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("testenv: proxy: find a free port: %v", err)
		}
		p.port = port
		err = p.listen()
		if err == nil {
			return p
		}
		if i == attempts {
			t.Fatalf("testenv: proxy: listen on %s: %v", p.Host(), err)
		}
	}
}

// Host is the proxy's "127.0.0.1:PORT", as used in references. The port is
// kept across Stop and Start.
func (p *Proxy) Host() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)) }

// URL is the proxy's base URL: "https://127.0.0.1:PORT", or "http://" in
// front of a Plain registry.
func (p *Proxy) URL() string {
	if p.tlsConfig == nil {
		return "http://" + p.Host()
	}
	return "https://" + p.Host()
}

// Ref is Host + "/" + repo (a repository, optionally with ":tag" or
// "@digest").
func (p *Proxy) Ref(repo string) string { return p.Host() + "/" + strings.TrimPrefix(repo, "/") }

// Registry is the registry behind the proxy.
func (p *Proxy) Registry() *Registry { return p.reg }

// Requests returns a copy of the requests received since the start or the
// last Reset, oldest first.
func (p *Proxy) Requests() []ProxyRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ProxyRequest, len(p.reqs))
	for i, r := range p.reqs {
		out[i] = *r
	}
	return out
}

// Count counts the requests received since the start or the last Reset
// whose method is method ("" for any) and whose path starts with
// pathPrefix ("" for any). Count("HEAD", "/v2/fleet/manifests/") counts
// manifest HEADs of one repository.
func (p *Proxy) Count(method, pathPrefix string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, r := range p.reqs {
		if (method == "" || r.Method == method) && strings.HasPrefix(r.Path, pathPrefix) {
			n++
		}
	}
	return n
}

// Reset forgets the requests received so far.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reqs = nil
}

// PaginateTags makes the proxy answer GET /v2/<name>/tags/list itself, in
// pages of at most pageSize tags (fewer when the client asks for n), in
// lexical order after the client's "last", with a Link header
// `</v2/<name>/tags/list?n=N&last=TAG>; rel="next"` while more remain, as
// the OCI distribution spec describes. It does so from the registry's full
// list, fetched with the client's Authorization header for every page (a
// registry error, 401 included, is passed on as it is). 0 turns it off.
//
// It exists because distribution 2.8 (Debian's docker-registry) ignores n
// and last on tags/list and never paginates: without it, a client's Link
// handling cannot be tested against the real registry.
func (p *Proxy) PaginateTags(pageSize int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tagsPage = max(pageSize, 0)
}

// Stop closes the proxy's listener and every connection through it: new
// connections to Host are refused, kept-alive ones fail. The registry keeps
// running. Stopping a stopped proxy does nothing.
func (p *Proxy) Stop() {
	p.mu.Lock()
	srv := p.srv
	p.srv = nil
	p.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Start starts a stopped proxy again on the same port. It fails the test if
// the proxy is running or the port cannot be had back within five seconds.
func (p *Proxy) Start() {
	p.t.Helper()
	p.mu.Lock()
	running := p.srv != nil
	p.mu.Unlock()
	if running {
		p.t.Fatalf("testenv: proxy %s is already running", p.Host())
	}
	var err error
	for i := 0; i < 20; i++ {
		if err = p.listen(); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	p.t.Fatalf("testenv: proxy: listen on %s again: %v", p.Host(), err)
}

func (p *Proxy) listen() error {
	l, err := net.Listen("tcp", p.Host())
	if err != nil {
		return err
	}
	if p.tlsConfig != nil {
		l = tls.NewListener(l, p.tlsConfig)
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(p.serveHTTP),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          discardLog,
	}
	p.mu.Lock()
	p.srv = srv
	p.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
	return nil
}

func (p *Proxy) serveHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &ProxyRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Time: time.Now()}
	p.mu.Lock()
	p.reqs = append(p.reqs, rec)
	tagsPage := p.tagsPage
	ft, intercept := p.fault, p.intercept
	p.mu.Unlock()
	sw := &statusWriter{ResponseWriter: w, setStatus: func(code int) {
		p.mu.Lock()
		rec.Status = code
		p.mu.Unlock()
	}}
	var out http.ResponseWriter = sw
	if ft.mode != FaultNone {
		fw, done := ft.apply(sw, r)
		if done {
			return
		}
		if fw != nil {
			defer fw.finish()
			out = fw
		}
	}
	if intercept != nil && intercept(out, r) {
		return
	}
	if tagsPage > 0 && r.Method == http.MethodGet {
		if m := tagsListPath.FindStringSubmatch(r.URL.Path); m != nil {
			p.serveTagsPage(out, r, m[1], tagsPage)
			return
		}
	}
	p.proxy.ServeHTTP(out, r)
}

// rewriteLocation makes a Location that names the registry name the proxy.
func (p *Proxy) rewriteLocation(resp *http.Response) error {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return nil
	}
	u, err := url.Parse(loc)
	if err != nil || u.Host != p.reg.Host() {
		return nil
	}
	u.Host = p.Host()
	resp.Header.Set("Location", u.String())
	return nil
}

// discardLog silences the messages of clients that hang up mid-response.
var discardLog = log.New(io.Discard, "", 0)

var tagsListPath = regexp.MustCompile(`^/v2/(.+)/tags/list$`)

// serveTagsPage answers one page of tags/list from the registry's full list.
func (p *Proxy) serveTagsPage(w http.ResponseWriter, r *http.Request, repo string, pageSize int) {
	q := r.URL.Query()
	limit := pageSize
	askedN := q.Has("n")
	if askedN {
		n, err := strconv.Atoi(q.Get("n"))
		if err != nil || n < 0 {
			writeRegistryError(w, http.StatusBadRequest, "PAGINATION_NUMBER_INVALID", "invalid number of results requested")
			return
		}
		limit = min(n, pageSize)
	}
	last := q.Get("last")

	up, err := http.NewRequestWithContext(r.Context(), http.MethodGet, p.reg.URL()+"/v2/"+repo+"/tags/list", nil)
	if err != nil {
		writeRegistryError(w, http.StatusBadGateway, "UNKNOWN", err.Error())
		return
	}
	for _, h := range []string{"Authorization", "Accept", "User-Agent"} {
		if v := r.Header.Values(h); len(v) > 0 {
			up.Header[h] = v
		}
	}
	up.Host = r.Host
	resp, err := p.transport.RoundTrip(up)
	if err != nil {
		http.Error(w, "testenv proxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		http.Error(w, "testenv proxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	if resp.StatusCode != http.StatusOK {
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
		return
	}
	var list struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		http.Error(w, "testenv proxy: tags/list from the registry: "+err.Error(), http.StatusBadGateway)
		return
	}
	tags := list.Tags
	sort.Strings(tags)
	start := 0
	if last != "" {
		start = sort.Search(len(tags), func(i int) bool { return tags[i] > last })
	}
	end := min(start+limit, len(tags))
	page := tags[start:end]
	if len(page) > 0 && end < len(tags) {
		n := limit
		if askedN {
			n, _ = strconv.Atoi(q.Get("n"))
		}
		next := url.Values{"n": {strconv.Itoa(n)}, "last": {page[len(page)-1]}}
		w.Header().Set("Link", fmt.Sprintf(`</v2/%s/tags/list?%s>; rel="next"`, repo, next.Encode()))
	}
	out, err := json.Marshal(struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{list.Name, append([]string{}, page...)})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

func writeRegistryError(w http.ResponseWriter, status int, code, msg string) {
	body, _ := json.Marshal(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// statusWriter records the first final status code of a response.
type statusWriter struct {
	http.ResponseWriter
	setStatus func(int)
	done      bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.done && code >= 200 {
		w.done = true
		w.setStatus(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (ReverseProxy's flushes) reach the
// underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// DockerConfigFor writes a Docker config.json (in a new temp dir, which it
// returns, for DOCKER_CONFIG) whose "auths" holds the registry's
// credentials for each of hosts, for example a Proxy's Host, or the
// registry's own Host when hosts is empty. With NoAuth it holds no
// credentials.
func (r *Registry) DockerConfigFor(t testing.TB, hosts ...string) (dir string) {
	t.Helper()
	if len(hosts) == 0 {
		hosts = []string{r.Host()}
	}
	type authEntry struct {
		Auth string `json:"auth"`
	}
	cfg := struct {
		Auths map[string]authEntry `json:"auths"`
	}{Auths: map[string]authEntry{}}
	if !r.opts.NoAuth {
		for _, h := range hosts {
			if h == "" {
				t.Fatalf("testenv: DockerConfigFor: empty host")
			}
			cfg.Auths[h] = authEntry{Auth: base64.StdEncoding.EncodeToString([]byte(r.Username + ":" + r.Password))}
		}
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), append(data, '\n'), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return dir
}
