package report

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/reconcile/metrics"
)

const digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
const digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

// TestPushArrives pushes the agent's metrics to a real Prometheus and
// queries them back: every series carries the device and its labels, the
// runtime series and the flattened histograms are there, and a series that
// the agent replaced (an old outcome) stops matching at once.
func TestPushArrives(t *testing.T) {
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{})
	d := newDevice(t, "press-07", p.WriteURL(), time.Now().Add(-time.Minute), func(o *Options) {
		o.Labels = map[string]string{"ring": "canary", "line": "3", "topology.zone": "hall-b", "source": "x"}
	})
	d.m.ObserveReconcile("line-3", "applied", 300*time.Millisecond)
	d.m.SetApplied("line-3", digestA, "1.4.0", "abc")
	d.m.SetOutcome("line-3", digestA, metrics.OutcomeApplied)
	d.m.SetWave("line-3", digestA, "canary")
	d.tick(0)
	if st := d.Status(); st.LastError != "" || st.SentSamples == 0 || st.QueuedSamples != 0 || st.WireBytes == 0 {
		t.Fatalf("status after a push: %+v\nlogs:\n%s", st, d.logs)
	}

	info := p.Vector(`berth_device_info`)
	if len(info) != 1 {
		t.Fatalf("berth_device_info = %v", info)
	}
	want := model.LabelSet{"__name__": "berth_device_info", "device": "press-07", "ring": "canary", "line": "3", "topology_zone": "hall-b", "device_source": "x"}
	if !info[0].Metric.Equal(model.Metric(want)) {
		t.Fatalf("berth_device_info labels = %v, want %v", info[0].Metric, want)
	}
	for _, q := range []string{
		`berth_source_applied_info{device="press-07",ring="canary",line="3",source="line-3",digest="` + digestA + `",version="1.4.0"}`,
		`berth_source_last_outcome{device="press-07",source="line-3",outcome="applied"}`,
		`berth_rollout_wave_info{device="press-07",wave="canary"}`,
		`berth_reconcile_duration_seconds_bucket{device="press-07",source="line-3",le="0.5"}`,
		`berth_reconcile_duration_seconds_bucket{device="press-07",source="line-3",le="+Inf"}`,
		`berth_reconcile_duration_seconds_count{device="press-07",source="line-3"}`,
		`go_gc_duration_seconds{device="press-07",quantile="0.5"}`,
		`go_goroutines{device="press-07",topology_zone="hall-b"}`,
		`berth_report_timestamp_seconds{device="press-07"}`,
	} {
		if v := p.Vector(q); len(v) != 1 {
			t.Errorf("%s: %d series, want 1: %v", q, len(v), v)
		}
	}
	if v := p.Vector(`berth_reconcile_duration_seconds_bucket{le="0.5"}`); len(v) != 1 || v[0].Value != 1 {
		t.Errorf("bucket le=0.5 = %v, want 1", v)
	}
	if v := p.Vector(`{__name__=~".+",device!="press-07"}`); len(v) != 0 {
		t.Errorf("series without the device label: %v", v)
	}

	// The release fails on the next attempt: the applied outcome is
	// replaced, and the staleness marker makes it vanish at once (without
	// it, it would match for Prometheus' 5-minute lookback).
	d.m.SetOutcome("line-3", digestB, metrics.OutcomeFailed)
	d.m.ClearWaiting("line-3")
	d.tick(10 * time.Second)
	out := p.Vector(`berth_source_last_outcome{device="press-07"}`)
	if len(out) != 1 || out[0].Metric["outcome"] != "failed" || out[0].Metric["digest"] != digestB {
		t.Fatalf("berth_source_last_outcome after a failure = %v", out)
	}
	if st := d.Status(); st.DroppedSamples != 0 || st.Failures != 0 {
		t.Fatalf("status: %+v\nlogs:\n%s", st, d.logs)
	}
	if strings.Contains(d.logs.String(), "level=WARN") {
		t.Errorf("warnings in the logs:\n%s", d.logs)
	}
}
