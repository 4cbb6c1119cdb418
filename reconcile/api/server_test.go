package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/reconcile/metrics"
)

// serveUnix serves srv on a socket in a new temporary folder until the test
// ends and returns the socket's path once it accepts connections.
func serveUnix(t *testing.T, srv *Server) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "berth.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeUnix(ctx, sock) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeUnix: %v", err)
		}
	})
	waitForSocket(t, sock, done)
	return sock
}

func waitForSocket(t *testing.T, sock string, done chan error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-done:
			t.Fatalf("ServeUnix returned early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket %s never accepted: %v", sock, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// unixHTTP returns an HTTP client that dials sock.
func unixHTTP(t *testing.T, sock string) *http.Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

const eventsJSON = `{
  "events": [
    {
      "id": "320678d8-ca14-430f-8bb6-4ca139cd83f7",
      "timestamp": "2025-06-01T12:00:00.123456789Z",
      "action": "pull",
      "target": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "` + digestA + `",
        "size": 708,
        "length": 708,
        "repository": "fleet/line-3",
        "url": "https://registry.example:5000/v2/fleet/line-3/manifests/` + digestA + `",
        "tag": "v1"
      },
      "request": {
        "id": "6df24a34-0959-4923-81ca-14f09767db19",
        "addr": "192.0.2.7:41234",
        "host": "registry.example:5000",
        "method": "GET",
        "useragent": "berth/v1.2.3"
      },
      "actor": {"name": "device"},
      "source": {"addr": "registry:5000", "instanceID": "17ce5e7a-9d02-4a5f-8e8c-4f4b5a4b6d1a"}
    },
    {
      "id": "a5b2f4c1-2e0e-4d8a-b6f1-0c1f3e5b7d9e",
      "timestamp": "2025-06-01T12:00:01.5Z",
      "action": "push",
      "target": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "` + digestC + `",
        "size": 712,
        "length": 712,
        "repository": "fleet/line-3",
        "url": "https://registry.example:5000/v2/fleet/line-3/manifests/` + digestC + `",
        "tag": "v3"
      },
      "request": {
        "id": "e5c7f0a2-7a3b-4c9d-8f5e-2b1d0a9c8e7f",
        "addr": "192.0.2.10:50002",
        "host": "registry.example:5000",
        "method": "PUT",
        "useragent": "berth/v1.2.3"
      },
      "actor": {"name": "ci"},
      "source": {"addr": "registry:5000", "instanceID": "17ce5e7a-9d02-4a5f-8e8c-4f4b5a4b6d1a"}
    }
  ]
}`

// A push announced without request.host, and a blob push that must not
// trigger anything.
const (
	eventsURLHostJSON = `{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + digestC + `","repository":"fleet/web","url":"https://registry.example:5000/v2/fleet/web/manifests/` + digestC + `"},"request":{}}]}`
	eventsBlobJSON    = `{"events":[{"action":"push","target":{"mediaType":"application/octet-stream","digest":"` + digestA + `","repository":"fleet/line-3","url":"https://registry.example:5000/v2/fleet/line-3/blobs/` + digestA + `"},"request":{"host":"registry.example:5000"}}]}`
)

func TestRoutes(t *testing.T) {
	type calls struct {
		reconcile []string
		suspends  []suspendCall
		rollbacks []rollbackCall
		notified  []notifyCall
	}
	pushC := notifyCall{host: "registry.example:5000", repository: "fleet/line-3", tag: "v3", digest: digestC}
	tests := []struct {
		name        string
		setup       func(*fakeAgent)
		method      string
		path        string
		contentType string
		body        string
		wantCode    int
		wantText    string // exact text answer, or
		wantJSON    string // JSON answer, compared as values, or
		wantHas     string // a substring of the answer
		wantAllow   string
		wantCalls   calls
	}{
		{name: "healthz", method: "GET", path: "/healthz", wantCode: 200, wantText: "ok\n"},
		{name: "healthz HEAD", method: "HEAD", path: "/healthz", wantCode: 200, wantText: ""},
		{name: "readyz ready", method: "GET", path: "/readyz", wantCode: 200, wantText: "ok\n"},
		{name: "readyz not ready", setup: func(f *fakeAgent) { f.ready = errors.New(`source "app" has not reconciled yet`) },
			method: "GET", path: "/readyz", wantCode: 503, wantText: "source \"app\" has not reconciled yet\n"},
		{name: "status", method: "GET", path: "/status", wantCode: 200, wantJSON: `{
			"version": "v1.2.3", "stateDir": "/var/lib/berth",
			"sources": [
				{"name": "app", "url": "oci://registry.example:5000/fleet/line-3", "ref": "tag", "interval": "1m0s",
				 "nextReconcile": "2025-06-01T12:01:00Z",
				 "applied": {"digest": "` + digestB + `", "tag": "v2", "time": "2025-06-01T12:00:00Z", "outcome": "applied"},
				 "last": {"digest": "` + digestB + `", "tag": "v2", "time": "2025-06-01T12:00:00Z", "outcome": "unchanged"},
				 "lastSuccess": "2025-06-01T12:00:00Z",
				 "history": [
					{"digest": "` + digestB + `", "tag": "v2", "time": "2025-06-01T12:00:00Z", "outcome": "applied"},
					{"digest": "` + digestA + `", "tag": "v1", "time": "2025-06-01T11:00:00Z", "outcome": "applied",
					 "annotations": {"org.opencontainers.image.revision": "abc"}}
				 ]},
				{"name": "web", "url": "oci://registry.example:5000/fleet/web", "ref": "semver", "interval": "5m0s",
				 "reconciling": true, "suspended": true}
			]}`},
		{name: "status without sources", setup: func(f *fakeAgent) { f.status.Sources = nil },
			method: "GET", path: "/status", wantCode: 200,
			wantJSON: `{"version": "v1.2.3", "stateDir": "/var/lib/berth", "sources": []}`},
		{name: "history", method: "GET", path: "/history/app", wantCode: 200, wantJSON: `[
			{"digest": "` + digestB + `", "tag": "v2", "time": "2025-06-01T12:00:00Z", "outcome": "applied"},
			{"digest": "` + digestA + `", "tag": "v1", "time": "2025-06-01T11:00:00Z", "outcome": "applied",
			 "annotations": {"org.opencontainers.image.revision": "abc"}}]`},
		{name: "history empty", method: "GET", path: "/history/web", wantCode: 200, wantJSON: `[]`},
		{name: "history unknown", method: "GET", path: "/history/nope", wantCode: 404,
			wantJSON: `{"error": "unknown source \"nope\""}`},
		{name: "metrics", method: "GET", path: "/metrics", wantCode: 200,
			wantHas: `berth_reconcile_total{result="applied",source="app"} 1`},
		{name: "reconcile all", method: "POST", path: "/reconcile", wantCode: 200, wantJSON: `[
			{"source": "app", "outcome": "unchanged", "digest": "` + digestB + `"},
			{"source": "web", "outcome": "refused", "digest": "` + digestC + `", "error": "no signature for ` + digestC + `"}]`,
			wantCalls: calls{reconcile: []string{""}}},
		{name: "reconcile one that fails", method: "POST", path: "/reconcile?source=web", wantCode: 200,
			wantJSON:  `[{"source": "web", "outcome": "refused", "digest": "` + digestC + `", "error": "no signature for ` + digestC + `"}]`,
			wantCalls: calls{reconcile: []string{"web"}}},
		{name: "reconcile ignoring windows", method: "POST", path: "/reconcile?source=web&ignoreWindows=true", wantCode: 200,
			wantJSON:  `[{"source": "web", "outcome": "refused", "digest": "` + digestC + `", "error": "no signature for ` + digestC + `"}]`,
			wantCalls: calls{reconcile: []string{"web ignoring windows"}}},
		{name: "reconcile ignoreWindows=false", method: "POST", path: "/reconcile?source=web&ignoreWindows=false", wantCode: 200,
			wantJSON:  `[{"source": "web", "outcome": "refused", "digest": "` + digestC + `", "error": "no signature for ` + digestC + `"}]`,
			wantCalls: calls{reconcile: []string{"web"}}},
		{name: "reconcile bad ignoreWindows", method: "POST", path: "/reconcile?source=web&ignoreWindows=maybe", wantCode: 400,
			wantJSON: `{"error": "ignoreWindows=\"maybe\": want true or false"}`},
		{name: "reconcile unknown", method: "POST", path: "/reconcile?source=nope", wantCode: 404,
			wantJSON: `{"error": "unknown source \"nope\""}`, wantCalls: calls{reconcile: []string{"nope"}}},
		{name: "reconcile error", method: "POST", path: "/reconcile?source=broken", wantCode: 500,
			wantJSON: `{"error": "write state: read-only file system"}`, wantCalls: calls{reconcile: []string{"broken"}}},
		{name: "suspend", method: "POST", path: "/suspend/app", wantCode: 200,
			wantJSON: `{"source": "app", "suspended": true}`, wantCalls: calls{suspends: []suspendCall{{"app", true}}}},
		{name: "resume", method: "POST", path: "/resume/web", wantCode: 200,
			wantJSON: `{"source": "web", "suspended": false}`, wantCalls: calls{suspends: []suspendCall{{"web", false}}}},
		{name: "suspend unknown", method: "POST", path: "/suspend/nope", wantCode: 404,
			wantJSON: `{"error": "unknown source \"nope\""}`},
		{name: "rollback to previous", method: "POST", path: "/rollback/app", wantCode: 200,
			wantJSON:  `{"source": "app", "outcome": "rolled-back", "digest": "` + digestA + `"}`,
			wantCalls: calls{rollbacks: []rollbackCall{{"app", ""}}}},
		{name: "rollback to digest", method: "POST", path: "/rollback/app?digest=" + digestC, wantCode: 200,
			wantJSON:  `{"source": "app", "outcome": "rolled-back", "digest": "` + digestC + `"}`,
			wantCalls: calls{rollbacks: []rollbackCall{{"app", digestC}}}},
		{name: "rollback bad digest", method: "POST", path: "/rollback/app?digest=sha256:xyz", wantCode: 400,
			wantHas: `"error": "bad digest \"sha256:xyz\"`},
		{name: "rollback impossible", method: "POST", path: "/rollback/web", wantCode: 409,
			wantJSON:  `{"error": "rollback web: conflict: no earlier revision"}`,
			wantCalls: calls{rollbacks: []rollbackCall{{"web", ""}}}},
		{name: "rollback unknown", method: "POST", path: "/rollback/nope", wantCode: 404,
			wantJSON: `{"error": "unknown source \"nope\""}`},
		{name: "hook push", method: "POST", path: "/hooks/registry", contentType: EventsMediaType, body: eventsJSON,
			wantCode: 200, wantJSON: `["app"]`, wantCalls: calls{notified: []notifyCall{pushC}}},
		{name: "hook application/json", method: "POST", path: "/hooks/registry", contentType: "application/json; charset=utf-8",
			body: eventsJSON, wantCode: 200, wantJSON: `["app"]`, wantCalls: calls{notified: []notifyCall{pushC}}},
		{name: "hook host from url", method: "POST", path: "/hooks/registry", contentType: EventsMediaType, body: eventsURLHostJSON,
			wantCode: 200, wantJSON: `["web"]`,
			wantCalls: calls{notified: []notifyCall{{host: "registry.example:5000", repository: "fleet/web", digest: digestC}}}},
		{name: "hook blob push ignored", method: "POST", path: "/hooks/registry", contentType: EventsMediaType, body: eventsBlobJSON,
			wantCode: 200, wantJSON: `[]`},
		{name: "hook no match", method: "POST", path: "/hooks/registry", contentType: EventsMediaType,
			body:     strings.ReplaceAll(eventsJSON, "fleet/line-3", "other/repo"),
			wantCode: 200, wantJSON: `[]`,
			wantCalls: calls{notified: []notifyCall{{host: "registry.example:5000", repository: "other/repo", tag: "v3", digest: digestC}}}},
		{name: "hook bad json", method: "POST", path: "/hooks/registry", contentType: EventsMediaType, body: `{"events": [`,
			wantCode: 400, wantHas: `"error": "bad notification: unexpected EOF"`},
		{name: "hook wrong shape", method: "POST", path: "/hooks/registry", contentType: EventsMediaType, body: `{"events": {}}`,
			wantCode: 400, wantHas: `bad notification`},
		{name: "hook trailing data", method: "POST", path: "/hooks/registry", contentType: EventsMediaType, body: `{"events": []} {}`,
			wantCode: 400, wantHas: `bad notification`},
		{name: "hook too large", method: "POST", path: "/hooks/registry", contentType: EventsMediaType,
			body:     `{"events": [], "padding": "` + strings.Repeat("x", MaxHookBody) + `"}`,
			wantCode: 413, wantJSON: `{"error": "notification larger than 1048576 bytes"}`},
		{name: "hook wrong content type", method: "POST", path: "/hooks/registry", contentType: "text/plain", body: eventsJSON,
			wantCode: 415, wantHas: `"error": "content type \"text/plain\"`},
		{name: "GET reconcile", method: "GET", path: "/reconcile", wantCode: 405, wantAllow: "POST",
			wantJSON: `{"error": "method GET not allowed; use POST"}`},
		{name: "POST status", method: "POST", path: "/status", wantCode: 405, wantAllow: "GET, HEAD",
			wantJSON: `{"error": "method POST not allowed; use GET"}`},
		{name: "DELETE suspend", method: "DELETE", path: "/suspend/app", wantCode: 405, wantAllow: "POST",
			wantHas: `not allowed`},
		{name: "GET hook", method: "GET", path: "/hooks/registry", wantCode: 405, wantAllow: "POST", wantHas: `not allowed`},
		{name: "unknown route", method: "GET", path: "/nope", wantCode: 404, wantJSON: `{"error": "no route /nope"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newFakeAgent()
			if tt.setup != nil {
				tt.setup(agent)
			}
			m := metrics.New()
			m.ObserveReconcile("app", "applied", time.Second)
			sock := serveUnix(t, NewServer(agent, m, nil))
			req, err := http.NewRequest(tt.method, "http://berth"+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			resp, err := unixHTTP(t, sock).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantCode {
				t.Errorf("status = %d, want %d; body %s", resp.StatusCode, tt.wantCode, b)
			}
			if tt.wantAllow != "" && resp.Header.Get("Allow") != tt.wantAllow {
				t.Errorf("Allow = %q, want %q", resp.Header.Get("Allow"), tt.wantAllow)
			}
			switch {
			case tt.wantJSON != "":
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
				var got, want any
				if err := json.Unmarshal(b, &got); err != nil {
					t.Fatalf("answer is not JSON: %v\n%s", err, b)
				}
				if err := json.Unmarshal([]byte(tt.wantJSON), &want); err != nil {
					t.Fatalf("bad wantJSON: %v", err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("answer:\n%s\nwant:\n%s", b, tt.wantJSON)
				}
			case tt.wantHas != "":
				if !strings.Contains(string(b), tt.wantHas) {
					t.Errorf("answer lacks %q:\n%s", tt.wantHas, b)
				}
			default:
				if string(b) != tt.wantText {
					t.Errorf("answer = %q, want %q", b, tt.wantText)
				}
			}
			rec, sus, rb, nt := agent.calls()
			got := calls{rec, sus, rb, nt}
			if !reflect.DeepEqual(got, tt.wantCalls) {
				t.Errorf("agent calls = %+v, want %+v", got, tt.wantCalls)
			}
		})
	}
}

func TestRequestsAreLoggedAtDebug(t *testing.T) {
	logs := &recordingHandler{}
	srv := NewServer(newFakeAgent(), nil, slog.New(logs))
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/history/nope", nil))
	if rec.Code != 404 {
		t.Fatalf("status = %d", rec.Code)
	}
	got := logs.find("api request")
	if len(got) != 1 {
		t.Fatalf("logged %d requests", len(got))
	}
	for k, want := range map[string]string{"level": "DEBUG", "method": "GET", "path": "/history/nope", "status": "404"} {
		if got[0][k] != want {
			t.Errorf("%s = %q, want %q", k, got[0][k], want)
		}
	}
}

func TestMetricsDisabled(t *testing.T) {
	rec := httptest.NewRecorder()
	NewServer(newFakeAgent(), nil, nil).Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 404 {
		t.Errorf("status = %d", rec.Code)
	}
}

func TestServeTCP(t *testing.T) {
	logs := &recordingHandler{}
	agent := newFakeAgent()
	srv := NewServer(agent, metrics.New(), slog.New(logs))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeTCP(ctx, "127.0.0.1:0") }()
	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == ""; {
		if l := logs.find("api listening"); len(l) > 0 {
			addr = l[0]["addr"]
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ServeTCP did not listen")
		}
		time.Sleep(5 * time.Millisecond)
	}
	tests := []struct {
		method, path string
		wantCode     int
	}{
		{"GET", "/healthz", 200},
		{"GET", "/status", 200},
		{"GET", "/history/app", 200},
		{"GET", "/metrics", 200},
		{"POST", "/reconcile?source=app", 200},
		{"POST", "/hooks/registry", 400}, // empty body: served, but bad
		// No authentication on TCP: no control.
		{"POST", "/suspend/app", 403},
		{"POST", "/resume/app", 403},
		{"POST", "/rollback/app", 403},
		{"POST", "/inhibit/app?for=1m", 403},
		{"POST", "/inhibit/app/release", 403},
		{"GET", "/inhibitors", 200},
		{"GET", "/rollback/app", 405},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, "http://"+addr+tt.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.wantCode {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.path, resp.StatusCode, tt.wantCode)
		}
	}
	if _, sus, rb, _ := agent.calls(); len(sus)+len(rb) != 0 {
		t.Errorf("control reached the agent over TCP: %v %v", sus, rb)
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ServeTCP: %v", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("still listening after cancel")
	}
}

func TestServeTCPBadAddress(t *testing.T) {
	err := NewServer(newFakeAgent(), nil, nil).ServeTCP(context.Background(), "256.0.0.1:http")
	if err == nil {
		t.Fatal("no error")
	}
}

// Stopping the server cancels a reconcile in flight and returns promptly.
func TestShutdownCancelsRequestsInFlight(t *testing.T) {
	agent := newFakeAgent()
	sock := filepath.Join(t.TempDir(), "berth.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(agent, nil, nil).ServeUnix(ctx, sock) }()
	waitForSocket(t, sock, done)

	reqDone := make(chan error, 1)
	go func() {
		_, err := NewClient(sock).Reconcile(context.Background(), "slow", ReconcileOptions{})
		reqDone <- err
	}()
	<-agent.started
	cancel()
	select {
	case <-agent.cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the reconcile in flight was not cancelled")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeUnix: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeUnix did not return")
	}
	if err := <-reqDone; err == nil {
		t.Error("the cancelled reconcile succeeded")
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}
