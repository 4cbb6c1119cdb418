// Package metrics holds the agent's Prometheus metrics.
//
// A Metrics has its own registry, so that several agents (or tests) in one
// process never share series, and serves it with Handler. Every method is
// safe for concurrent use and does nothing on a nil *Metrics, so code that
// runs without metrics needs no checks.
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DurationBuckets are the buckets of berth_reconcile_duration_seconds: an
// unchanged poll takes milliseconds, pulling and applying a large artifact
// minutes.
var DurationBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// Metrics holds the agent's collectors and the registry they live in.
type Metrics struct {
	reg *prometheus.Registry

	reconciles       *prometheus.CounterVec
	duration         *prometheus.HistogramVec
	lastSuccess      *prometheus.GaugeVec
	applied          *prometheus.GaugeVec
	verifyFailures   *prometheus.CounterVec
	registryRequests *prometheus.CounterVec
	// statementsIgnored is berth_rollout_statements_ignored.
	statementsIgnored *prometheus.GaugeVec
	fleet             *fleet
	report            *report

	appliedMu sync.Mutex // serialises the reset-and-set of SetApplied
}

// New returns Metrics registered in a new registry, together with the Go
// runtime and process collectors (memory, file descriptors, CPU).
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_reconcile_total",
			Help: "Reconciles by source and result (applied, unchanged, failed, refused, error).",
		}, []string{"source", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "berth_reconcile_duration_seconds",
			Help:    "Duration of reconciles by source.",
			Buckets: DurationBuckets,
		}, []string{"source"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_last_success_timestamp_seconds",
			Help: "Unix time of the last reconcile of the source that ended without error.",
		}, []string{"source"}),
		applied: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_applied_revision_info",
			Help: "The revision applied for the source (value 1).",
		}, []string{"source", "digest", "version", "revision"}),
		verifyFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_verification_failures_total",
			Help: "Artifacts refused by verification, by source and reason.",
		}, []string{"source", "reason"}),
		registryRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_registry_requests_total",
			Help: `HTTP requests to registries by host, method and status code ("error" when no response came).`,
		}, []string{"host", "method", "code"}),
		statementsIgnored: newStatementsIgnored(),
		fleet:             newFleet(),
		report:            newReport(),
	}
	m.reg.MustRegister(
		m.reconciles, m.duration, m.lastSuccess, m.applied, m.verifyFailures, m.registryRequests,
		m.statementsIgnored,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.reg.MustRegister(m.fleet.collectors()...)
	m.reg.MustRegister(m.report.collectors()...)
	return m
}

// Registry returns the registry the metrics are registered in, for extra
// collectors and for tests.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// ObserveReconcile counts one reconcile of source that ended with result (a
// store.Outcome: applied, unchanged, failed, refused or error) and records
// its duration.
func (m *Metrics) ObserveReconcile(source, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.reconciles.WithLabelValues(source, result).Inc()
	m.duration.WithLabelValues(source).Observe(d.Seconds())
}

// SetLastSuccess records t as the time source last reconciled without error.
func (m *Metrics) SetLastSuccess(source string, t time.Time) {
	if m == nil {
		return
	}
	m.lastSuccess.WithLabelValues(source).Set(float64(t.UnixNano()) / 1e9)
}

// SetApplied records the revision applied for source, replacing the series
// of the revision applied before, in berth_applied_revision_info and in
// the fleet series berth_source_applied_info.
func (m *Metrics) SetApplied(source, digest, version, revision string) {
	if m == nil {
		return
	}
	m.appliedMu.Lock()
	defer m.appliedMu.Unlock()
	m.applied.DeletePartialMatch(prometheus.Labels{"source": source})
	m.applied.WithLabelValues(source, digest, version, revision).Set(1)
	m.fleet.sourceInfo.DeletePartialMatch(prometheus.Labels{"source": source})
	m.fleet.sourceInfo.WithLabelValues(source, digest, version).Set(1)
}

// VerificationFailed counts an artifact of source refused by verification;
// reason is a short, bounded word (for example "unsigned", "signature",
// "downgrade", "archive"), never an error message.
func (m *Metrics) VerificationFailed(source, reason string) {
	if m == nil {
		return
	}
	m.verifyFailures.WithLabelValues(source, reason).Inc()
}

// InstrumentTransport returns rt (http.DefaultTransport when nil) counting
// every request in berth_registry_requests_total by host, method and status
// code, or code "error" when the round trip failed.
func (m *Metrics) InstrumentTransport(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	if m == nil {
		return rt
	}
	return &countingTransport{next: rt, requests: m.registryRequests}
}

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

type countingTransport struct {
	next     http.RoundTripper
	requests *prometheus.CounterVec
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	code := "error"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	t.requests.WithLabelValues(req.URL.Host, req.Method, code).Inc()
	return resp, err
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// wrapped transport.
func (t *countingTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
