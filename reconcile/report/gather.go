package report

import (
	"math"
	"slices"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/berth-dev/berth/reconcile/metrics"
)

// sampler turns gathered metric families into remote-write time series: it
// flattens summaries and histograms the way the text exposition does, adds
// the device's labels, and decides what to send. Every refresh it sends a
// snapshot of every series; in between, only the series that are new and
// the fleet series (metrics.FleetSeries: what a rollout is steered by, and
// the heartbeat) whose value changed. A series that disappeared gets a
// staleness marker.
type sampler struct {
	// extra are the labels added to every series (device and the device's
	// labels), sorted by name.
	extra []prompb.Label
	// refresh is the time between two snapshots, in ms; 0 sends a snapshot
	// at every gather.
	refresh int64
	// snapshot is when the last snapshot was taken, ms; 0: never.
	snapshot int64
	// last is, by series key, the value last queued.
	last map[string]lastSample
}

type lastSample struct {
	bits   uint64
	labels []prompb.Label
}

// prompt are the names of the series sent as soon as they change.
var prompt = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range metrics.FleetSeries {
		m[n] = true
	}
	return m
}()

func newSampler(extra []prompb.Label, refreshMs int64) *sampler {
	slices.SortFunc(extra, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
	return &sampler{extra: extra, refresh: refreshMs, last: map[string]lastSample{}}
}

// sample returns the series to send for families gathered at ts (ms) and
// the number of samples they hold.
func (s *sampler) sample(families []*dto.MetricFamily, ts int64) (*prompb.WriteRequest, int) {
	req := &prompb.WriteRequest{}
	seen := make(map[string]bool, len(s.last))
	snapshot := s.snapshot == 0 || ts-s.snapshot >= s.refresh
	if snapshot {
		s.snapshot = ts
	}
	emit := func(name string, pairs []*dto.LabelPair, extraName, extraValue string, v float64) {
		labels := s.labels(name, pairs, extraName, extraValue)
		key := seriesKey(labels)
		seen[key] = true
		bits := math.Float64bits(v)
		prev, known := s.last[key]
		// Between snapshots: a series that is new, or a fleet series that
		// changed.
		if !snapshot && known && (!prompt[name] || prev.bits == bits) {
			return
		}
		s.last[key] = lastSample{bits: bits, labels: labels}
		req.Timeseries = append(req.Timeseries, prompb.TimeSeries{Labels: labels, Samples: []prompb.Sample{{Value: v, Timestamp: ts}}})
	}
	for _, mf := range families {
		name := mf.GetName()
		for _, m := range mf.GetMetric() {
			lp := m.GetLabel()
			switch {
			case m.Counter != nil:
				emit(name, lp, "", "", m.Counter.GetValue())
			case m.Gauge != nil:
				emit(name, lp, "", "", m.Gauge.GetValue())
			case m.Untyped != nil:
				emit(name, lp, "", "", m.Untyped.GetValue())
			case m.Summary != nil:
				for _, q := range m.Summary.GetQuantile() {
					emit(name, lp, "quantile", formatFloat(q.GetQuantile()), q.GetValue())
				}
				emit(name+"_sum", lp, "", "", m.Summary.GetSampleSum())
				emit(name+"_count", lp, "", "", float64(m.Summary.GetSampleCount()))
			case m.Histogram != nil:
				h := m.Histogram
				inf := false
				for _, b := range h.GetBucket() {
					ub := b.GetUpperBound()
					inf = inf || math.IsInf(ub, 1)
					emit(name+"_bucket", lp, "le", formatFloat(ub), float64(b.GetCumulativeCount()))
				}
				if !inf {
					emit(name+"_bucket", lp, "le", "+Inf", float64(h.GetSampleCount()))
				}
				emit(name+"_sum", lp, "", "", h.GetSampleSum())
				emit(name+"_count", lp, "", "", float64(h.GetSampleCount()))
			}
		}
	}
	n := len(req.Timeseries)
	for key, prev := range s.last {
		if !seen[key] {
			req.Timeseries = append(req.Timeseries, prompb.TimeSeries{Labels: prev.labels, Samples: []prompb.Sample{{Value: math.Float64frombits(value.StaleNaN), Timestamp: ts}}})
			delete(s.last, key)
		}
	}
	// Staleness markers in a stable order, for reproducible requests.
	slices.SortFunc(req.Timeseries[n:], func(a, b prompb.TimeSeries) int {
		return strings.Compare(seriesKey(a.Labels), seriesKey(b.Labels))
	})
	return req, len(req.Timeseries)
}

// labels returns the sorted labels of a series: __name__, the metric's own,
// one more (le or quantile) when given, and the device's, unless the
// metric has a label of the same name.
func (s *sampler) labels(name string, pairs []*dto.LabelPair, extraName, extraValue string) []prompb.Label {
	out := make([]prompb.Label, 0, 2+len(pairs)+len(s.extra))
	out = append(out, prompb.Label{Name: "__name__", Value: name})
	for _, p := range pairs {
		out = append(out, prompb.Label{Name: p.GetName(), Value: p.GetValue()})
	}
	if extraName != "" {
		out = append(out, prompb.Label{Name: extraName, Value: extraValue})
	}
	own := len(out)
	for _, e := range s.extra {
		if !slices.ContainsFunc(out[:own], func(l prompb.Label) bool { return l.Name == e.Name }) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// seriesKey identifies a series by its sorted labels.
func seriesKey(labels []prompb.Label) string {
	var b strings.Builder
	for _, l := range labels {
		b.WriteString(l.Name)
		b.WriteByte(0xfe)
		b.WriteString(l.Value)
		b.WriteByte(0xff)
	}
	return b.String()
}

// formatFloat writes an le or quantile value as the text exposition of
// client_golang does.
func formatFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	case math.IsNaN(f):
		return "NaN"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// merge joins requests, oldest first, into one: the samples of a series
// that several hold become one series with its samples in time order.
func merge(reqs []*prompb.WriteRequest) *prompb.WriteRequest {
	if len(reqs) == 1 {
		return reqs[0]
	}
	out := &prompb.WriteRequest{}
	index := map[string]int{}
	for _, r := range reqs {
		for _, ts := range r.Timeseries {
			key := seriesKey(ts.Labels)
			i, ok := index[key]
			if !ok {
				i = len(out.Timeseries)
				index[key] = i
				out.Timeseries = append(out.Timeseries, prompb.TimeSeries{Labels: ts.Labels})
			}
			out.Timeseries[i].Samples = append(out.Timeseries[i].Samples, ts.Samples...)
		}
	}
	return out
}

// countSamples counts the samples of req.
func countSamples(req *prompb.WriteRequest) int {
	n := 0
	for _, ts := range req.Timeseries {
		n += len(ts.Samples)
	}
	return n
}
