package testenv

import (
	"net/http"
	"testing"
)

// TestPrometheus starts Debian's prometheus with TLS and basic auth, checks
// that the credentials are required, and that it comes back after Stop.
func TestPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("starts prometheus")
	}
	p := StartPrometheus(t, PrometheusOptions{TLS: true, BasicAuth: true, OutOfOrderWindow: 0})
	resp, err := p.HTTPClient().Get(p.URL() + "/api/v1/status/flags")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("with credentials: %s", resp.Status)
	}
	anon := p.HTTPClient()
	anon.Transport = anon.Transport.(basicAuthTransport).next
	resp, err = anon.Get(p.URL() + "/api/v1/status/flags")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without credentials: %s, want 401", resp.Status)
	}
	if v := p.Vector("vector(1)"); len(v) != 1 || v[0].Value != 1 {
		t.Fatalf("vector(1) = %v", v)
	}
	p.Stop()
	if _, err := p.HTTPClient().Get(p.URL() + "/-/ready"); err == nil {
		t.Fatal("prometheus answers after Stop")
	}
	p.Start()
	if v := p.Vector("vector(2)"); len(v) != 1 || v[0].Value != 2 {
		t.Fatalf("vector(2) = %v", v)
	}
}
