package metrics

import "github.com/prometheus/client_golang/prometheus"

// The reporter's own series say whether the device's reports reach
// Prometheus. They have no labels (but reason) and appear once the
// reporter runs, so an agent that does not report shows none of them.

// Reasons for which the reporter drops samples (berth_report_samples_dropped_total).
const (
	// DropMaxAge: queued longer than queue.maxAge.
	DropMaxAge = "max_age"
	// DropMaxSize: the oldest queued samples, dropped to keep the queue
	// under queue.maxSize.
	DropMaxSize = "max_size"
	// DropRejected: the endpoint refused the request for what it holds
	// (HTTP 4xx other than 429, such as a sample too old for Prometheus'
	// head); sending it again would fail the same way.
	DropRejected = "rejected"
	// DropCorrupt: a queued record could not be read back (a crash while
	// it was written, or a damaged disk).
	DropCorrupt = "corrupt"
)

// report holds the reporter's series.
type report struct {
	sent     *prometheus.CounterVec
	sentB    *prometheus.CounterVec
	failures *prometheus.CounterVec
	dropped  *prometheus.CounterVec
	queued   *prometheus.GaugeVec
	queuedB  *prometheus.GaugeVec
}

func newReport() *report {
	return &report{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_report_samples_sent_total",
			Help: "Samples the remote-write endpoint accepted.",
		}, nil),
		sentB: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_report_wire_bytes_total",
			Help: "Bytes the reporter's connections to the remote-write endpoint sent and received (TLS, HTTP headers and bodies, failed attempts included; TCP/IP headers not).",
		}, nil),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_report_failures_total",
			Help: "Remote-write requests that failed (unreachable, timeout, HTTP 5xx or 429); their samples stay queued.",
		}, nil),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_report_samples_dropped_total",
			Help: "Samples dropped before they reached the endpoint, by reason: max_age, max_size, rejected, corrupt.",
		}, []string{"reason"}),
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_report_queue_samples",
			Help: "Samples queued on disk, waiting for the endpoint.",
		}, nil),
		queuedB: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_report_queue_bytes",
			Help: "Bytes the queue of samples takes on disk.",
		}, nil),
	}
}

func (r *report) collectors() []prometheus.Collector {
	return []prometheus.Collector{r.sent, r.sentB, r.failures, r.dropped, r.queued, r.queuedB}
}

// ReportSent counts samples the endpoint accepted.
func (m *Metrics) ReportSent(samples int) {
	if m == nil {
		return
	}
	m.report.sent.WithLabelValues().Add(float64(samples))
}

// ReportWire counts bytes sent or received on the reporter's connections.
func (m *Metrics) ReportWire(bytes int64) {
	if m == nil || bytes <= 0 {
		return
	}
	m.report.sentB.WithLabelValues().Add(float64(bytes))
}

// ReportFailed counts a request that failed and will be tried again.
func (m *Metrics) ReportFailed() {
	if m == nil {
		return
	}
	m.report.failures.WithLabelValues().Inc()
}

// ReportDropped counts n samples dropped for reason (DropMaxAge,
// DropMaxSize, DropRejected or DropCorrupt).
func (m *Metrics) ReportDropped(reason string, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.report.dropped.WithLabelValues(reason).Add(float64(n))
}

// SetReportQueue records what the queue holds.
func (m *Metrics) SetReportQueue(samples int, bytes int64) {
	if m == nil {
		return
	}
	m.report.queued.WithLabelValues().Set(float64(samples))
	m.report.queuedB.WithLabelValues().Set(float64(bytes))
}
