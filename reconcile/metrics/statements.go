package metrics

import "github.com/prometheus/client_golang/prometheus"

// newStatementsIgnored is berth_rollout_statements_ignored.
func newStatementsIgnored() *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "berth_rollout_statements_ignored",
		Help: "Rollout statements attached to the source's newest release that the device ignored at its last look-up (unsigned, untrusted, copied from another release, malformed).",
	}, []string{"source"})
}

// SetStatementsIgnored records how many statements of source's newest
// release were ignored at the last look-up.
func (m *Metrics) SetStatementsIgnored(source string, n int) {
	if m == nil {
		return
	}
	m.statementsIgnored.WithLabelValues(source).Set(float64(n))
}
