package oci

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestLoopbackPlainHTTP: a plain-HTTP registry on loopback works without
// Insecure, as Docker allows (issue 14, point 2: push and agent failed with
// only "server gave HTTP response to HTTPS client").
func TestLoopbackPlainHTTP(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	img, _ := random.Image(64, 1)
	r, _ := name.ParseReference(host + "/fleet/x:v1")
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{host, strings.Replace(host, "127.0.0.1", "localhost", 1)} {
		c, err := NewClient(Options{DockerConfig: t.TempDir() + "/config.json"})
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := ParseReference("oci://" + h + "/fleet/x")
		tags, err := c.Tags(context.Background(), ref)
		if err != nil || len(tags) != 1 || tags[0] != "v1" {
			t.Errorf("%s: tags %v, %v", h, tags, err)
		}
	}
}

// stubTLS answers every HTTPS request as a plain-HTTP server does and
// records the schemes asked for.
type stubTLS struct{ schemes []string }

func (s *stubTLS) RoundTrip(req *http.Request) (*http.Response, error) {
	s.schemes = append(s.schemes, req.URL.Scheme)
	if req.URL.Scheme == "https" {
		return nil, tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake", RecordHeader: [5]byte{'H', 'T', 'T', 'P', '/'}}
	}
	return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("{}")), Request: req}, nil
}

// TestPlainHTTPElsewhereSaysWhichFlag: a registry off loopback answering
// plain HTTP is refused with the flag and field that allow it.
func TestPlainHTTPElsewhereSaysWhichFlag(t *testing.T) {
	for _, tc := range []struct {
		host  string
		plain bool
	}{{"registry.example.com", false}, {"10.0.0.5:5000", false}, {"127.0.0.1:5000", true}, {"localhost:5000", true}, {"[::1]:5000", true}} {
		stub := &stubTLS{}
		rt := &loopbackHTTP{next: stub}
		req, _ := http.NewRequest(http.MethodGet, "https://"+tc.host+"/v2/", nil)
		resp, err := rt.RoundTrip(req)
		if tc.plain {
			if err != nil || resp.StatusCode != 200 || strings.Join(stub.schemes, ",") != "https,http" {
				t.Errorf("%s: %v, schemes %v", tc.host, err, stub.schemes)
			}
			// Remembered: the next request goes plain at once.
			stub.schemes = nil
			if _, err := rt.RoundTrip(req); err != nil || strings.Join(stub.schemes, ",") != "http" {
				t.Errorf("%s again: %v, schemes %v", tc.host, err, stub.schemes)
			}
			continue
		}
		if !errors.Is(err, ErrPlainHTTP) || !strings.Contains(err.Error(), "--insecure") || !strings.Contains(err.Error(), "insecure: true") || !strings.Contains(err.Error(), tc.host) {
			t.Errorf("%s: err = %v", tc.host, err)
		}
	}
}
