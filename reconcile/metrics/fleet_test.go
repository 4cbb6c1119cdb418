package metrics

import (
	"strings"
	"testing"
	"time"
)

// TestFleetSeries checks the fleet series: the device's labels, one series
// per source (replaced, not added), bounded label values.
func TestFleetSeries(t *testing.T) {
	m := New()
	body := scrape(t, m)
	for _, absent := range []string{"berth_device_info", "berth_source_", "berth_rollout_", "berth_report_"} {
		if strings.Contains(body, "\n"+absent) {
			t.Errorf("%s present before anything was set:\n%s", absent, body)
		}
	}
	m.SetDevice("press-07", map[string]string{"ring": "canary", "topology.zone": "b", "source": "x"})
	m.SetApplied("line-3", "sha256:aaa", "1.4.0", "abc")
	m.SetApplied("line-3", "sha256:bbb", "1.5.0", "def")
	m.SetOutcome("line-3", "sha256:bbb", OutcomeWaiting)
	m.SetOutcome("line-3", "sha256:bbb", OutcomeApplied)
	m.SetOutcome("web", "sha256:ccc", "exploded")
	m.SetWave("line-3", "sha256:bbb", "early")
	m.SetWave("web", "sha256:ccc", "canary")
	m.SetWave("web", "sha256:ccc", "")
	m.SetWaiting("line-3", "sha256:ddd", WaitWindow, time.Unix(1700000000, 0))
	m.SetWaiting("line-3", "sha256:ddd", WaitPaused, time.Time{})
	m.SetWaiting("web", "sha256:eee", WaitWave, time.Unix(1700000000, 0))
	m.ClearWaiting("web")
	m.SetReportTime(time.UnixMilli(1700000000123))
	m.ReportSent(10)
	m.ReportDropped(DropMaxSize, 4)
	m.SetReportQueue(3, 300)

	body = scrape(t, m)
	for _, want := range []string{
		`berth_device_info{device="press-07",device_source="x",ring="canary",topology_zone="b"} 1`,
		`berth_source_applied_info{digest="sha256:bbb",source="line-3",version="1.5.0"} 1`,
		`berth_source_last_outcome{digest="sha256:bbb",outcome="applied",source="line-3"} 1`,
		`berth_source_last_outcome{digest="sha256:ccc",outcome="other",source="web"} 1`,
		`berth_rollout_wave_info{digest="sha256:bbb",source="line-3",wave="early"} 1`,
		`berth_rollout_waiting{digest="sha256:ddd",reason="paused",source="line-3"} 0`,
		`berth_report_timestamp_seconds 1.700000000123e+09`,
		`berth_report_samples_sent_total 10`,
		`berth_report_samples_dropped_total{reason="max_size"} 4`,
		`berth_report_queue_samples 3`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %s", want)
		}
	}
	for _, gone := range []string{`sha256:aaa`, `outcome="waiting"`, `wave="canary"`, `reason="window"`, `sha256:eee`} {
		if strings.Contains(body, gone) {
			t.Errorf("%s should have been replaced", gone)
		}
	}
	if id, labels := m.Device(); id != "press-07" || labels["topology_zone"] != "b" {
		t.Errorf("Device() = %s %v", id, labels)
	}
	var nilM *Metrics
	nilM.SetDevice("x", nil)
	nilM.SetOutcome("a", "b", OutcomeFailed)
	nilM.SetWave("a", "b", "c")
	nilM.SetWaiting("a", "b", WaitWave, time.Now())
	nilM.ClearWaiting("a")
	nilM.SetReportTime(time.Now())
	nilM.ReportSent(1)
	nilM.ReportFailed()
	nilM.ReportWire(1)
	nilM.ReportDropped("x", 1)
	nilM.SetReportQueue(1, 1)
}
