package margotest

import (
	"compress/gzip"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The WFM's HTTP side: every request is recorded, its body checked
// against the schema, and answered from what the test published, or with
// an injected fault.

func (w *WFM) serve(rw http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	client := ""
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && len(r.TLS.PeerCertificates[0].URIs) == 1 {
		client = r.TLS.PeerCertificates[0].URIs[0].String()
	}
	rec := &recorder{ResponseWriter: rw, status: http.StatusOK}
	if w.gzip && r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		rec.gzip = true
		defer rec.close()
	}
	w.handle(rec, r, client, body)
	req := Request{Method: r.Method, Path: r.URL.Path, Proto: r.Proto, Header: r.Header.Clone(), Client: client, Body: body, Status: rec.status, Encoding: rec.Header().Get("Content-Encoding"), Time: time.Now()}
	if r.TLS != nil {
		req.TLSVersion, req.ALPN, req.Resumed, req.ClientChain = r.TLS.Version, r.TLS.NegotiatedProtocol, r.TLS.DidResume, r.TLS.PeerCertificates
	}
	w.mu.Lock()
	w.requests = append(w.requests, req)
	w.mu.Unlock()
}

// recorder keeps the status answered; with gzip, it compresses a 200
// answer's body (Content-Encoding: gzip).
type recorder struct {
	http.ResponseWriter
	status  int
	written bool
	gzip    bool
	gz      *gzip.Writer
}

func (r *recorder) WriteHeader(code int) {
	if r.written {
		return
	}
	r.status, r.written = code, true
	if r.gzip && code == http.StatusOK {
		r.Header().Set("Content-Encoding", "gzip")
		r.Header().Add("Vary", "Accept-Encoding")
		r.Header().Del("Content-Length")
		r.gz = gzip.NewWriter(r.ResponseWriter)
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.written {
		r.WriteHeader(http.StatusOK)
	}
	if r.gz != nil {
		return r.gz.Write(b)
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) close() {
	if r.gz != nil {
		r.gz.Close()
	}
}

func problem(rw http.ResponseWriter, status int, typ, title, detail string) {
	p := map[string]any{"type": typ, "title": title, "status": status, "detail": detail, "retryable": false, "backoffStrategy": "none"}
	writeProblem(rw, status, p)
}

func writeProblem(rw http.ResponseWriter, status int, p map[string]any) {
	rw.Header().Set("Content-Type", problemType)
	rw.WriteHeader(status)
	json.NewEncoder(rw).Encode(p)
}

func (w *WFM) handle(rw http.ResponseWriter, r *http.Request, client string, body []byte) {
	w.mu.Lock()
	for i, f := range w.faults {
		if (f.Method == "" || f.Method == r.Method) && strings.HasPrefix(r.URL.Path, f.Path) {
			if f.Count > 0 {
				f.Count--
				if f.Count == 0 {
					w.faults = slices.Delete(w.faults, i, i+1)
				}
			}
			w.mu.Unlock()
			if f.RetryAfter != "" {
				rw.Header().Set("Retry-After", f.RetryAfter)
			}
			p := f.Problem
			if p == nil {
				retry := f.Status == 429 || f.Status == 503 || f.Status == 500
				p = map[string]any{"type": "about:blank", "title": http.StatusText(f.Status), "status": f.Status, "retryable": retry, "backoffStrategy": map[bool]string{true: "exponential", false: "none"}[retry]}
			}
			writeProblem(rw, f.Status, p)
			return
		}
	}
	retired := w.retired[client]
	w.mu.Unlock()
	if retired {
		problem(rw, http.StatusForbidden, problemBase+"not-authorized", "Client Relationship Retired", "this client is no longer accepted")
		return
	}
	p := r.URL.Path
	switch {
	case p == "/api/v1/deployments" && r.Method == http.MethodGet:
		w.serveManifest(rw, r)
	case strings.HasPrefix(p, "/api/v1/bundles/") && r.Method == http.MethodGet:
		w.serveContent(rw, strings.TrimPrefix(p, "/api/v1/bundles/"), "", true)
	case strings.HasPrefix(p, "/api/v1/deployments/") && strings.HasSuffix(p, "/status") && r.Method == http.MethodPost:
		w.postStatus(rw, r, strings.TrimSuffix(strings.TrimPrefix(p, "/api/v1/deployments/"), "/status"), body)
	case strings.HasPrefix(p, "/api/v1/deployments/") && r.Method == http.MethodGet:
		id, digest, _ := strings.Cut(strings.TrimPrefix(p, "/api/v1/deployments/"), "/")
		w.serveContent(rw, digest, id, false)
	case strings.HasPrefix(p, "/api/v1/capabilities/") && r.Method == http.MethodPut:
		w.putCapabilities(rw, r, strings.TrimPrefix(p, "/api/v1/capabilities/"), body)
	default:
		problem(rw, http.StatusNotFound, "about:blank", "Not Found", r.Method+" "+p)
	}
}

// accepts reports whether an Accept header admits the media type mt.
func accepts(header, mt string) bool {
	if header == "" {
		return true
	}
	for _, part := range strings.Split(header, ",") {
		t, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if t == mt || t == "*/*" || t == strings.SplitN(mt, "/", 2)[0]+"/*" {
			return true
		}
	}
	return false
}

func (w *WFM) serveManifest(rw http.ResponseWriter, r *http.Request) {
	if !accepts(r.Header.Get("Accept"), ManifestType) {
		problem(rw, http.StatusNotAcceptable, problemBase+"server-cannot-generate-response", "Not Acceptable", "this WFM serves "+ManifestType)
		return
	}
	w.mu.Lock()
	raw, etag := w.manifest, w.etag
	w.mu.Unlock()
	rw.Header().Set("ETag", etag)
	rw.Header().Set("Cache-Control", "private")
	if r.Header.Get("If-None-Match") == etag {
		rw.WriteHeader(http.StatusNotModified)
		return
	}
	rw.Header().Set("Content-Type", ManifestType)
	rw.Header().Set("Content-Length", strconv.Itoa(len(raw)))
	rw.Write(raw)
}

func (w *WFM) serveContent(rw http.ResponseWriter, digest, id string, bundle bool) {
	w.mu.Lock()
	var data []byte
	var ok bool
	if bundle {
		data, ok = w.bundles[digest]
	} else {
		data, ok = w.content[digest]
		ok = ok && w.contentOwner[digest] == id
	}
	if c, bad := w.corrupt[digest]; bad && ok {
		data = c
	}
	gone := w.gone[digest]
	w.mu.Unlock()
	if !ok || gone {
		if bundle {
			problem(rw, http.StatusNotFound, problemBase+"invalid-bundle", "Bundle Not Found", digest)
		} else {
			problem(rw, http.StatusNotFound, problemBase+"deployment-not-found", "Deployment Not Found", id+"/"+digest)
		}
		return
	}
	ct := "application/yaml"
	if bundle {
		ct = BundleType
	}
	rw.Header().Set("Content-Type", ct)
	rw.Header().Set("ETag", `"`+digest+`"`)
	rw.Header().Set("Cache-Control", "private, max-age=31536000, immutable")
	rw.Header().Set("Content-Length", strconv.Itoa(len(data)))
	rw.Write(data)
}

func (w *WFM) violation(rw http.ResponseWriter, what string, errs []string) {
	w.mu.Lock()
	for _, e := range errs {
		w.violations = append(w.violations, what+": "+e)
	}
	w.mu.Unlock()
	var fe []map[string]string
	for _, e := range errs {
		f, m, _ := strings.Cut(e, ": ")
		fe = append(fe, map[string]string{"field": f, "message": m})
	}
	writeProblem(rw, http.StatusUnprocessableEntity, map[string]any{
		"type": problemBase + "semantic-error", "title": "Invalid Body", "status": 422,
		"detail": what + " breaks the schema", "retryable": false, "backoffStrategy": "none", "errors": fe,
	})
}

func (w *WFM) putCapabilities(rw http.ResponseWriter, r *http.Request, deviceID string, body []byte) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		w.violation(rw, "capabilities", []string{"Content-Type: must be application/json"})
		return
	}
	if errs := ValidateCapabilities(body, deviceID); len(errs) > 0 {
		w.violation(rw, "capabilities", errs)
		return
	}
	w.mu.Lock()
	_, known := w.caps[deviceID]
	w.caps[deviceID] = body
	w.mu.Unlock()
	if known {
		rw.WriteHeader(http.StatusOK)
	} else {
		rw.WriteHeader(http.StatusCreated)
	}
}

func (w *WFM) postStatus(rw http.ResponseWriter, r *http.Request, id string, body []byte) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		w.violation(rw, "status", []string{"Content-Type: must be application/json"})
		return
	}
	if errs := ValidateStatus(body, id); len(errs) > 0 {
		w.violation(rw, "status", errs)
		return
	}
	var s struct {
		DeploymentID           string `json:"deploymentId"`
		DeviceID               string `json:"deviceId"`
		AdoptedManifestVersion uint64 `json:"adoptedManifestVersion"`
		Status                 struct {
			State string         `json:"state"`
			Error map[string]any `json:"error"`
		} `json:"status"`
		Components []struct {
			Name  string         `json:"name"`
			State string         `json:"state"`
			Error map[string]any `json:"error"`
		} `json:"components"`
	}
	json.Unmarshal(body, &s)
	st := Status{DeploymentID: s.DeploymentID, DeviceID: s.DeviceID, AdoptedManifestVersion: s.AdoptedManifestVersion, State: s.Status.State, Error: s.Status.Error, Raw: body}
	for _, c := range s.Components {
		st.Components = append(st.Components, ComponentState{Name: c.Name, State: c.State, Error: c.Error})
	}
	w.mu.Lock()
	w.statuses = append(w.statuses, st)
	w.mu.Unlock()
	rw.WriteHeader(http.StatusCreated)
}
