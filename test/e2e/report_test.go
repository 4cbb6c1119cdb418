package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/berth-dev/berth/internal/testenv"
)

// reportStatus is the report part of berth status --output json.
type reportStatus struct {
	Report *struct {
		Endpoint      string
		Device        string
		LastError     string
		QueuedSamples int
		SentSamples   int64
	}
}

func (a *agentEnv) reportStatus() reportStatus {
	a.t.Helper()
	out, errOut, code := testenv.Run(a.t, a.bin, nil, "status", "--config", a.cfgPath, "--output", "json")
	var st reportStatus
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Report == nil {
		a.t.Fatalf("status: exit %d %q %s", code, out, errOut)
	}
	return st
}

// TestAgentReportsToPrometheus runs the real agent with report.prometheus
// against Debian's Prometheus over HTTPS with basic auth: what it applies
// shows up in Prometheus under its device id; while Prometheus is down the
// agent keeps reconciling, queues its samples on disk across its own
// restart, and delivers them with their original timestamps when
// Prometheus is back.
func TestAgentReportsToPrometheus(t *testing.T) {
	a := newAgentEnv(t)
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{TLS: true, BasicAuth: true})
	pw := filepath.Join(t.TempDir(), "metrics.password")
	if err := os.WriteFile(pw, []byte(p.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v1 := a.publish("stable", a.key, 1)
	a.writeConfig("ref: {tag: stable}", fmt.Sprintf(`device: {id: press-07, labels: {ring: canary, topology.kubernetes.io/zone: hall-b}}
report:
  prometheus:
    remoteWrite: %s
    interval: 1s
    caFile: %s
    basicAuth: {username: %s, passwordFile: %s}
    queue: {maxAge: 1h, maxSize: 4MiB}`, p.WriteURL(), p.CAFile, p.Username, pw))
	agent := a.startAgent()
	a.waitApplied(v1)

	st := a.reportStatus().Report
	if st.Device != "press-07" || st.Endpoint != p.WriteURL() {
		t.Fatalf("status report = %+v", st)
	}
	dev := st.Device
	applied := func(digest string) bool {
		return len(p.Vector(fmt.Sprintf(`berth_source_applied_info{device=%q,source="line-3",digest=%q}`, dev, digest))) == 1
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return applied(v1) }, "berth_source_applied_info for %s never reached Prometheus", v1)
	if v := p.Vector(fmt.Sprintf(`berth_reconcile_total{device=%q,source="line-3",result="applied"}`, dev)); len(v) != 1 || v[0].Value < 1 {
		t.Fatalf("berth_reconcile_total = %v", v)
	}
	// The device's labels are on every series, under Prometheus label names.
	if v := p.Vector(fmt.Sprintf(`berth_device_info{device=%q,ring="canary",topology_kubernetes_io_zone="hall-b"}`, dev)); len(v) != 1 {
		t.Fatalf("berth_device_info = %v", v)
	}
	if v := p.Vector(`berth_source_applied_info{ring="canary",topology_kubernetes_io_zone="hall-b"}`); len(v) != 1 {
		t.Fatalf("berth_source_applied_info with the device's labels = %v", v)
	}

	// Prometheus goes away; the agent goes on reconciling.
	p.Stop()
	outageStart := time.Now()
	v2 := a.publish("stable", a.key, 2)
	a.waitApplied(v2)
	testenv.Eventually(t, 30*time.Second, func() bool {
		st := a.reportStatus().Report
		return st.QueuedSamples > 0 && st.LastError != ""
	}, "the agent never queued while Prometheus was down")
	time.Sleep(2 * time.Second)
	// The agent stops in the middle of the outage: its queue stays on disk.
	agent.Stop()
	outageEnd := time.Now()
	queued, _ := filepath.Glob(filepath.Join(a.stateDir, "report", "queue", "*.rec"))
	if len(queued) < 3 {
		t.Fatalf("queue after the agent stopped: %v", queued)
	}

	p.Start()
	again := a.startAgent()
	testenv.Eventually(t, 60*time.Second, func() bool { return applied(v2) }, "berth_source_applied_info for %s never reached Prometheus", v2)
	testenv.Eventually(t, 30*time.Second, func() bool { return a.reportStatus().Report.QueuedSamples == 0 }, "queue never drained")

	// The heartbeats taken during the outage are there, at their times.
	m := p.Matrix(fmt.Sprintf(`berth_report_timestamp_seconds{device=%q}[10m]`, dev))
	if len(m) != 1 {
		t.Fatalf("heartbeat: %v", m)
	}
	var during int
	for _, s := range m[0].Values {
		at := s.Timestamp.Time()
		if at.After(outageStart) && at.Before(outageEnd) {
			during++
			if got := model.TimeFromUnixNano(int64(float64(s.Value) * 1e9)); got.Sub(s.Timestamp).Abs() > time.Millisecond {
				t.Fatalf("sample at %v holds %v", s.Timestamp, s.Value)
			}
		}
	}
	if during < 3 {
		t.Fatalf("%d heartbeats from the outage (%s to %s) reached Prometheus: %v", during, outageStart, outageEnd, m[0].Values)
	}
	logs := agent.Stderr() + again.Stderr()
	if strings.Contains(logs, p.Password) {
		t.Fatal("the password reached the logs")
	}
	if !strings.Contains(logs, "remote write failed; samples stay queued") || !strings.Contains(again.Stderr(), "queued samples delivered") {
		t.Fatalf("the outage is not in the logs:\n%s", logs)
	}
}
