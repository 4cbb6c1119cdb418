package promclient

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// TestCredentials checks the headers the client sends (the servers of the
// real-Prometheus tests do not take bearer tokens): a bearer token read at
// every request, basic auth, the User-Agent, no gzip, and the byte count.
func TestCredentials(t *testing.T) {
	var got atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Header.Clone())
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(tok, "first\n")
	var wire atomic.Int64
	c, err := New(Config{Insecure: true, BearerTokenFile: tok, UserAgent: "berth-test", Wire: &wire})
	if err != nil {
		t.Fatal(err)
	}
	get := func() http.Header {
		resp, err := c.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return got.Load().(http.Header)
	}
	h := get()
	if h.Get("Authorization") != "Bearer first" || h.Get("User-Agent") != "berth-test" || h.Get("Accept-Encoding") != "" {
		t.Fatalf("headers: %v", h)
	}
	write(tok, "rotated")
	if h := get(); h.Get("Authorization") != "Bearer rotated" {
		t.Fatalf("after rotation: %v", h)
	}
	if wire.Load() < 100 {
		t.Fatalf("wire bytes %d", wire.Load())
	}
	write(tok, "\n")
	if _, err := c.Get(srv.URL); err == nil {
		t.Fatal("an empty token file was sent")
	}

	pw := filepath.Join(dir, "pw")
	write(pw, "s3cr3t\n")
	c, err = New(Config{Insecure: true, Username: "dev", PasswordFile: pw})
	if err != nil {
		t.Fatal(err)
	}
	if h := get(); h.Get("Authorization") != "Basic ZGV2OnMzY3IzdA==" {
		t.Fatalf("basic auth: %v", h)
	}
	for _, bad := range []Config{
		{BearerTokenFile: tok, Username: "u", PasswordFile: pw},
		{Username: "u"},
		{CAFile: pw},
	} {
		if _, err := New(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
