package metrics

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// scrape returns the text exposition Handler serves.
func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHandlerServesObservations(t *testing.T) {
	m := New()
	m.ObserveReconcile("app", "applied", 300*time.Millisecond)
	m.ObserveReconcile("app", "unchanged", 20*time.Millisecond)
	m.ObserveReconcile("app", "unchanged", 30*time.Millisecond)
	m.ObserveReconcile("web", "refused", 2*time.Second)
	m.SetLastSuccess("app", time.Unix(1700000000, 500_000_000))
	m.SetApplied("app", "sha256:aaa", "1.0.0", "abc123")
	m.SetApplied("app", "sha256:bbb", "1.1.0", "def456") // replaces the one before
	m.SetApplied("web", "sha256:ccc", "", "")
	m.VerificationFailed("web", "signature")
	m.VerificationFailed("web", "signature")
	m.VerificationFailed("web", "downgrade")

	body := scrape(t, m)
	for _, want := range []string{
		`berth_reconcile_total{result="applied",source="app"} 1`,
		`berth_reconcile_total{result="unchanged",source="app"} 2`,
		`berth_reconcile_total{result="refused",source="web"} 1`,
		`berth_reconcile_duration_seconds_count{source="app"} 3`,
		`berth_reconcile_duration_seconds_sum{source="app"} 0.35`,
		`berth_reconcile_duration_seconds_bucket{source="app",le="0.05"} 2`,
		`berth_reconcile_duration_seconds_bucket{source="app",le="0.5"} 3`,
		`berth_reconcile_duration_seconds_bucket{source="web",le="1"} 0`,
		`berth_reconcile_duration_seconds_bucket{source="web",le="2.5"} 1`,
		`berth_last_success_timestamp_seconds{source="app"} 1.7000000005e+09`,
		`berth_applied_revision_info{digest="sha256:bbb",revision="def456",source="app",version="1.1.0"} 1`,
		`berth_applied_revision_info{digest="sha256:ccc",revision="",source="web",version=""} 1`,
		`berth_verification_failures_total{reason="signature",source="web"} 2`,
		`berth_verification_failures_total{reason="downgrade",source="web"} 1`,
		`process_resident_memory_bytes `,
		`go_goroutines `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if strings.Contains(body, "sha256:aaa") {
		t.Errorf("the previous applied revision is still exported:\n%s", body)
	}
}

func TestExactSeries(t *testing.T) {
	m := New()
	m.ObserveReconcile("app", "error", time.Second)
	m.SetLastSuccess("app", time.Unix(1700000000, 0))
	m.SetApplied("app", "sha256:aaa", "1.0.0", "abc")
	m.SetApplied("app", "sha256:bbb", "1.1.0", "def")
	m.VerificationFailed("app", "unsigned")

	const want = `
# HELP berth_applied_revision_info The revision applied for the source (value 1).
# TYPE berth_applied_revision_info gauge
berth_applied_revision_info{digest="sha256:bbb",revision="def",source="app",version="1.1.0"} 1
# HELP berth_last_success_timestamp_seconds Unix time of the last reconcile of the source that ended without error.
# TYPE berth_last_success_timestamp_seconds gauge
berth_last_success_timestamp_seconds{source="app"} 1.7e+09
# HELP berth_reconcile_total Reconciles by source and result (applied, unchanged, failed, refused, error).
# TYPE berth_reconcile_total counter
berth_reconcile_total{result="error",source="app"} 1
# HELP berth_verification_failures_total Artifacts refused by verification, by source and reason.
# TYPE berth_verification_failures_total counter
berth_verification_failures_total{reason="unsigned",source="app"} 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"berth_applied_revision_info", "berth_last_success_timestamp_seconds",
		"berth_reconcile_total", "berth_verification_failures_total",
		"berth_registry_requests_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.duration); n != 1 {
		t.Errorf("duration series = %d, want 1", n)
	}
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "berth_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}

func TestAppliedRevisionPerSource(t *testing.T) {
	m := New()
	m.SetApplied("a", "sha256:1", "1.0.0", "r1")
	m.SetApplied("b", "sha256:2", "2.0.0", "r2")
	m.SetApplied("a", "sha256:3", "1.1.0", "r3")
	if n := testutil.CollectAndCount(m.applied); n != 2 {
		t.Fatalf("series = %d, want one per source", n)
	}
	if v := testutil.ToFloat64(m.applied.WithLabelValues("a", "sha256:3", "1.1.0", "r3")); v != 1 {
		t.Errorf("a = %v", v)
	}
	if v := testutil.ToFloat64(m.applied.WithLabelValues("b", "sha256:2", "2.0.0", "r2")); v != 1 {
		t.Errorf("b = %v", v)
	}
}

type failingTransport struct{}

func (failingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("connection refused")
}

func TestInstrumentTransport(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/":
			w.WriteHeader(http.StatusUnauthorized)
		case "/v2/app/manifests/v1":
			w.WriteHeader(http.StatusOK)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	m := New()
	c := &http.Client{Transport: m.InstrumentTransport(srv.Client().Transport)}
	for _, r := range []struct{ method, path string }{
		{http.MethodGet, "/v2/"},
		{http.MethodHead, "/v2/app/manifests/v1"},
		{http.MethodHead, "/v2/app/manifests/v1"},
		{http.MethodGet, "/v2/app/blobs/sha256:x"},
	} {
		req, _ := http.NewRequest(r.method, srv.URL+r.path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	c.CloseIdleConnections()
	// A transport error counts as code "error".
	failing := m.InstrumentTransport(failingTransport{})
	req, _ := http.NewRequest(http.MethodGet, "https://registry.invalid:5000/v2/", nil)
	if _, err := failing.RoundTrip(req); err == nil {
		t.Fatal("no error")
	}

	host := strings.TrimPrefix(srv.URL, "http://")
	want := `
# HELP berth_registry_requests_total HTTP requests to registries by host, method and status code ("error" when no response came).
# TYPE berth_registry_requests_total counter
berth_registry_requests_total{code="200",host="` + host + `",method="HEAD"} 2
berth_registry_requests_total{code="401",host="` + host + `",method="GET"} 1
berth_registry_requests_total{code="404",host="` + host + `",method="GET"} 1
berth_registry_requests_total{code="error",host="registry.invalid:5000",method="GET"} 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "berth_registry_requests_total"); err != nil {
		t.Error(err)
	}
	body := scrape(t, m)
	if !strings.Contains(body, `berth_registry_requests_total{code="200",host="`+host+`",method="HEAD"} 2`) {
		t.Errorf("scrape lacks the registry requests:\n%s", body)
	}
}

func TestNilMetricsIsANoOp(t *testing.T) {
	var m *Metrics
	m.ObserveReconcile("a", "applied", time.Second)
	m.SetLastSuccess("a", time.Now())
	m.SetApplied("a", "d", "v", "r")
	m.VerificationFailed("a", "r")
	if m.Registry() != nil {
		t.Error("registry of nil metrics")
	}
	if rt := m.InstrumentTransport(nil); rt != http.DefaultTransport {
		t.Errorf("transport = %v", rt)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("handler = %d", rec.Code)
	}
}

func TestRegistriesAreIndependent(t *testing.T) {
	a, b := New(), New()
	a.ObserveReconcile("x", "applied", time.Second)
	if n := testutil.CollectAndCount(b.reconciles); n != 0 {
		t.Errorf("b has %d series", n)
	}
}
