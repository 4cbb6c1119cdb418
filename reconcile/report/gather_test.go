package report

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/berth-dev/berth/reconcile/metrics"
)

// names lists the series of req as name{le or quantile} and whether the
// sample is a staleness marker.
func names(req *prompb.WriteRequest) []string {
	var out []string
	for _, ts := range req.Timeseries {
		n := ""
		for _, l := range ts.Labels {
			switch l.Name {
			case "__name__":
				n = l.Value + n
			case "le", "quantile", "source":
				n += "{" + l.Value + "}"
			}
		}
		if math.Float64bits(ts.Samples[0].Value) == value.StaleNaN {
			n += " stale"
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// TestSampler checks what each gather sends: a snapshot of everything
// first, then only new series and changed fleet series until the next
// snapshot, staleness markers for what went, and the device's labels on
// every series.
func TestSampler(t *testing.T) {
	m := metrics.New()
	m.SetApplied("line-3", digestA, "1.4.0", "")
	m.ObserveReconcile("line-3", "applied", time.Second)
	s := newSampler([]prompb.Label{{Name: "device", Value: "d1"}, {Name: "ring", Value: "canary"}}, (4 * time.Minute).Milliseconds())
	ts := time.Now().UnixMilli()
	gather := func() *prompb.WriteRequest {
		m.SetReportTime(time.UnixMilli(ts))
		fams, err := m.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		req, n := s.sample(fams, ts)
		if n != countSamples(req) {
			t.Fatalf("sample says %d samples, request holds %d", n, countSamples(req))
		}
		ts += time.Minute.Milliseconds()
		return req
	}

	first := names(gather())
	for _, want := range []string{"berth_source_applied_info{line-3}", "berth_reconcile_duration_seconds_bucket{+Inf}{line-3}", "berth_reconcile_duration_seconds_bucket{1}{line-3}", "go_goroutines", "go_gc_duration_seconds{0.5}", "berth_report_timestamp_seconds"} {
		if !slices.Contains(first, want) {
			t.Errorf("first gather lacks %s: %v", want, first)
		}
	}
	req := gather()
	for _, ts := range req.Timeseries {
		if !slices.ContainsFunc(ts.Labels, func(l prompb.Label) bool { return l.Name == "device" && l.Value == "d1" }) ||
			!slices.IsSortedFunc(ts.Labels, func(a, b prompb.Label) int { return cmpString(a.Name, b.Name) }) {
			t.Fatalf("labels %v", ts.Labels)
		}
	}
	if got := names(req); !slices.Equal(got, []string{"berth_report_timestamp_seconds"}) {
		t.Fatalf("second gather, nothing changed: %v", got)
	}

	// A new release: the fleet series go at once, the old applied series
	// gets a staleness marker; a new counter series goes at once; the
	// changed histogram waits for the snapshot.
	m.SetApplied("line-3", digestB, "1.5.0", "")
	m.SetOutcome("line-3", digestB, metrics.OutcomeApplied)
	m.ObserveReconcile("line-3", "refused", time.Second)
	got := names(gather())
	want := []string{
		// berth_applied_revision_info is no fleet series, but the new
		// digest makes it a new series.
		"berth_applied_revision_info{line-3}", "berth_applied_revision_info{line-3} stale",
		"berth_reconcile_total{line-3}",
		"berth_report_timestamp_seconds",
		"berth_source_applied_info{line-3}", "berth_source_applied_info{line-3} stale",
		"berth_source_last_outcome{line-3}",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("after a new release:\n got %v\nwant %v", got, want)
	}
	gather() // 3 minutes after the snapshot
	if got := names(gather()); len(got) < 50 {
		t.Fatalf("4 minutes after the first snapshot, a new one: %v", got)
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestMerge checks that merging gathers keeps each series' samples in
// time order under one set of labels.
func TestMerge(t *testing.T) {
	l := func(n string) []prompb.Label { return []prompb.Label{{Name: "__name__", Value: n}} }
	a := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: l("x"), Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}}, {Labels: l("y"), Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}}}}
	b := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: l("x"), Samples: []prompb.Sample{{Value: 2, Timestamp: 2}}}}}
	m := merge([]*prompb.WriteRequest{a, b})
	if len(m.Timeseries) != 2 || len(m.Timeseries[0].Samples) != 2 || m.Timeseries[0].Samples[1].Timestamp != 2 || countSamples(m) != 3 {
		t.Fatalf("merge = %+v", m)
	}
}
