package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

// fuzzAgent is an Agent that answers at once and records what it was asked:
// sources "app" and "web" exist; "web" tracks registry.example:5000/fleet/web.
type fuzzAgent struct {
	mu        sync.Mutex
	reconcile []string
	suspends  []suspendCall
	rollbacks []rollbackCall
	notified  []notifyCall
}

var _ Agent = (*fuzzAgent)(nil)

func (f *fuzzAgent) known(source string) error {
	if source == "app" || source == "web" {
		return nil
	}
	return ErrUnknownSource
}

func (f *fuzzAgent) Status() Status {
	return Status{Sources: []SourceStatus{{Name: "app"}, {Name: "web"}}}
}

func (f *fuzzAgent) Ready() error { return nil }

func (f *fuzzAgent) ReconcileNow(_ context.Context, source string) ([]ReconcileResult, error) {
	f.mu.Lock()
	f.reconcile = append(f.reconcile, source)
	f.mu.Unlock()
	if source != "" {
		if err := f.known(source); err != nil {
			return nil, err
		}
	}
	return []ReconcileResult{{Source: "app", Outcome: "unchanged"}}, nil
}

func (f *fuzzAgent) Suspend(source string, suspend bool) error {
	f.mu.Lock()
	f.suspends = append(f.suspends, suspendCall{source, suspend})
	f.mu.Unlock()
	return f.known(source)
}

func (f *fuzzAgent) Rollback(_ context.Context, source, d string) (ReconcileResult, error) {
	f.mu.Lock()
	f.rollbacks = append(f.rollbacks, rollbackCall{source, d})
	f.mu.Unlock()
	return ReconcileResult{Source: source, Outcome: "rolledback", Digest: d}, f.known(source)
}

func (f *fuzzAgent) NotifyRepository(_ context.Context, host, repository, tag, d string) []string {
	f.mu.Lock()
	f.notified = append(f.notified, notifyCall{host, repository, tag, d})
	f.mu.Unlock()
	if host == "registry.example:5000" && repository == "fleet/web" {
		return []string{"web"}
	}
	return nil
}

// hookSeeds are notifications as distribution sends them: a manifest
// push, the blob pushes before it, a pull and a delete.
var hookSeeds = []string{
	`{"events":[{"id":"320678d8","timestamp":"2025-06-01T12:00:00Z","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":708,"digest":"` + digestA + `","length":708,"repository":"fleet/web","url":"https://registry.example:5000/v2/fleet/web/manifests/` + digestA + `","tag":"v1.4.0"},"request":{"id":"6df24a34","addr":"10.0.0.7:52280","host":"registry.example:5000","method":"PUT","useragent":"berth"},"actor":{"name":"ci"},"source":{"addr":"registry:5000","instanceID":"a53db899"}}]}`,
	`{"events":[{"action":"push","target":{"mediaType":"application/octet-stream","digest":"` + digestB + `","repository":"fleet/web","url":"https://registry.example:5000/v2/fleet/web/blobs/` + digestB + `"},"request":{"host":"registry.example:5000"}},{"action":"pull","target":{"repository":"fleet/web"}},{"action":"delete","target":{"repository":"fleet/web","digest":"` + digestA + `"}}]}`,
	`{"events":[{"action":"push","target":{"repository":"fleet/web","url":"http://registry.example:5000/v2/fleet/web/manifests/v1"}}]}`,
	`{"events":[]}`, `{}`, `{"events":null}`, `[]`, `{"events":[{}]} {}`,
}

// FuzzHook posts arbitrary notification bodies and content types to
// /hooks/registry. The handler must never panic; it answers 200, 400,
// 413 or 415 with a JSON body; it accepts exactly the bodies that are one
// JSON envelope (within MaxHookBody) of an accepted content type; and it
// notifies the agent of exactly the manifest pushes of the envelope, and
// answers with the sources that triggered.
func FuzzHook(f *testing.F) {
	for _, s := range hookSeeds {
		f.Add([]byte(s), EventsMediaType)
	}
	f.Add([]byte(hookSeeds[0]), "application/json; charset=utf-8")
	f.Add([]byte(hookSeeds[0]), "text/plain")
	f.Add([]byte(hookSeeds[0]), "")
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		a := &fuzzAgent{}
		req := httptest.NewRequest(http.MethodPost, "/hooks/registry", bytes.NewReader(body))
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		rec := httptest.NewRecorder()
		NewServer(a, nil, nil).Handler().ServeHTTP(rec, req)
		_, _, _, notified := a.calls()

		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("answer %d is not JSON: %q", rec.Code, rec.Body.Bytes())
		}
		typeOK := contentType == ""
		if mt, _, err := mime.ParseMediaType(contentType); err == nil {
			typeOK = typeOK || mt == EventsMediaType || mt == "application/json"
		}
		var env envelope
		dec := json.NewDecoder(bytes.NewReader(body))
		decodes := dec.Decode(&env) == nil
		if decodes {
			_, terr := dec.Token()
			decodes = terr == io.EOF
		}
		switch {
		case !typeOK:
			if rec.Code != http.StatusUnsupportedMediaType {
				t.Fatalf("content type %q: %d, want 415", contentType, rec.Code)
			}
		case len(body) > MaxHookBody:
			if rec.Code != http.StatusRequestEntityTooLarge && rec.Code != http.StatusBadRequest {
				t.Fatalf("%d bytes: %d, want 413", len(body), rec.Code)
			}
		case decodes:
			if rec.Code != http.StatusOK {
				t.Fatalf("valid envelope refused with %d: %s", rec.Code, rec.Body.Bytes())
			}
		default:
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("invalid envelope answered %d, want 400: %q", rec.Code, body)
			}
		}
		if rec.Code != http.StatusOK {
			if len(notified) != 0 {
				t.Fatalf("refused with %d, yet the agent was notified %d times", rec.Code, len(notified))
			}
			return
		}

		var want []notifyCall
		triggered := []string{}
		for _, ev := range env.Events {
			if ev.Action != "push" || ev.Target.Repository == "" {
				continue
			}
			u, _ := url.Parse(ev.Target.URL)
			if u != nil && strings.Contains(u.Path, "/blobs/") {
				continue
			}
			host := ev.Request.Host
			if host == "" && u != nil {
				host = u.Host
			}
			want = append(want, notifyCall{host, ev.Target.Repository, ev.Target.Tag, ev.Target.Digest})
			if host == "registry.example:5000" && ev.Target.Repository == "fleet/web" && !slices.Contains(triggered, "web") {
				triggered = append(triggered, "web")
			}
		}
		if !slices.Equal(notified, want) {
			t.Fatalf("notified %+v, want %+v", notified, want)
		}
		var got []string
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || !slices.Equal(got, triggered) {
			t.Fatalf("answer %s, want %q", rec.Body.Bytes(), triggered)
		}
	})
}

// FuzzRequest sends arbitrary request targets (path and query) with each
// method to the full handler, as a client of the unix socket may. It must
// never panic; every answer is JSON, or text for /healthz and /readyz,
// with a documented status; a rollback reaches the agent only with a
// digest that parses (or none), exactly as given; a refused digest is 400.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		"/status", "/healthz", "/readyz", "/history/app", "/history/nope", "/metrics",
		"/reconcile", "/reconcile?source=app", "/reconcile?source=nope&source=app",
		"/suspend/app", "/resume/web", "/rollback/app", "/rollback/app?digest=" + digestA,
		"/rollback/app?digest=sha256:short", "/rollback/app?digest=" + url.QueryEscape(digestA) + "%00",
		"/rollback/%2e%2e/app", "/hooks/registry", "/history/a%2Fb", "//status", "/status/../rollback/app",
	} {
		f.Add(s, uint8(0))
		f.Add(s, uint8(1))
	}
	methods := []string{http.MethodGet, http.MethodPost, http.MethodHead, http.MethodPut, http.MethodDelete}
	documented := []int{200, 400, 403, 404, 405, 409, 413, 415, 500, 503}
	f.Fuzz(func(t *testing.T, target string, m uint8) {
		u, err := url.ParseRequestURI(target)
		if err != nil || !strings.HasPrefix(target, "/") {
			return // the HTTP server refuses the request line
		}
		method := methods[int(m)%len(methods)]
		req := &http.Request{Method: method, URL: u, RequestURI: target, Host: "localhost",
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{}, Body: http.NoBody}
		req = req.WithContext(context.Background())
		a := &fuzzAgent{}
		rec := httptest.NewRecorder()
		NewServer(a, nil, nil).Handler().ServeHTTP(rec, req)
		if !slices.Contains(documented, rec.Code) && !(rec.Code >= 300 && rec.Code < 400) {
			t.Fatalf("%s %s: status %d", method, target, rec.Code)
		}
		ct := rec.Header().Get("Content-Type")
		if strings.HasPrefix(ct, "application/json") && method != http.MethodHead && !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %s: %d, body not JSON: %q", method, target, rec.Code, rec.Body.Bytes())
		}
		_, _, rollbacks, _ := a.calls()
		for _, rb := range rollbacks {
			if rb.digest != "" {
				if _, err := digest.Parse(rb.digest); err != nil {
					t.Fatalf("%s %s: rollback to %q reached the agent", method, target, rb.digest)
				}
			}
			if rb.digest != u.Query().Get("digest") {
				t.Fatalf("%s %s: rollback to %q, the query says %q", method, target, rb.digest, u.Query().Get("digest"))
			}
		}
		if d := u.Query().Get("digest"); d != "" && method == http.MethodPost && strings.HasPrefix(u.Path, "/rollback/") && !strings.Contains(u.Path[len("/rollback/"):], "/") {
			if _, err := digest.Parse(d); err != nil && rec.Code != http.StatusBadRequest && rec.Code < 300 {
				t.Fatalf("%s %s: bad digest answered %d", method, target, rec.Code)
			}
		}
	})
}

func (f *fuzzAgent) calls() (reconcile []string, suspends []suspendCall, rollbacks []rollbackCall, notified []notifyCall) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reconcile), slices.Clone(f.suspends), slices.Clone(f.rollbacks), slices.Clone(f.notified)
}
