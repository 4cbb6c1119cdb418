package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/berth-dev/berth/internal/fleetsim"
	"github.com/berth-dev/berth/internal/testenv"
)

// BenchmarkReportFleet simulates an hour of a fleet reporting to one real
// Prometheus (Debian's, with the remote-write receiver) at a 1-minute
// interval: N devices (BERTH_BENCH_DEVICES, default 1000), each with the
// agent's real metrics and reporter, polling one source every minute.
// The simulated clock runs faster than real time; every device pushes 61
// times, its samples stamped a minute apart.
//
// Reported:
//   - B/device/h: bytes on the wire (TLS handshakes, HTTP headers and
//     bodies, answers; TCP/IP headers not) per device over the 60 pushes
//     of the hour after the first. The first push (full TLS handshake,
//     first snapshot) is first-B/device.
//   - samples/device/h, and realtime-samples/s: what N devices send
//     Prometheus per second in real time at that rate.
//   - prom-samples/s: the ingestion Prometheus sustained during the
//     compressed run (prometheus_tsdb_head_samples_appended_total).
//
// Variants: https (HTTP/2, the connection kept between pushes), http
// (plain HTTP/1.1, kept too) and https-reconnect (100 devices, the
// connection dropped after every push, as a NAT that forgets idle
// connections within a minute does; the TLS session is resumed).
// Prometheus runs with --web.max-connections above the fleet size: every
// device keeps one connection open.
//
// It checks that Prometheus appended exactly the samples the reporters say
// it accepted, and holds every device's last heartbeat.
func BenchmarkReportFleet(b *testing.B) {
	n := 1000
	if s := os.Getenv("BERTH_BENCH_DEVICES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			b.Fatalf("BERTH_BENCH_DEVICES=%q", s)
		}
		n = v
	}
	for _, tc := range []struct {
		name      string
		tls       bool
		reconnect bool
		devices   int
	}{
		{"https", true, false, n},
		{"http", false, false, n},
		{"https-reconnect", true, true, min(n, 100)},
	} {
		b.Run(fmt.Sprintf("%s/devices=%d", tc.name, tc.devices), func(b *testing.B) {
			for range b.N {
				runFleet(b, tc.tls, tc.reconnect, tc.devices)
			}
		})
	}
}

func runFleet(b *testing.B, tls, reconnect bool, devices int) {
	p := testenv.StartPrometheus(b, testenv.PrometheusOptions{TLS: tls, Args: []string{fmt.Sprintf("--web.max-connections=%d", 2*devices+100)}})
	o := fleetsim.Options{URL: p.WriteURL(), CAFile: p.CAFile, Dir: b.TempDir()}
	fleet := make([]*fleetsim.Device, devices)
	for i := range fleet {
		labels := map[string]string{"line": strconv.Itoa(i % 12), "site": "berlin"}
		if i%50 == 0 {
			labels["ring"] = "canary"
		}
		d, err := fleetsim.NewDevice(o, fmt.Sprintf("press-%04d", i), labels)
		if err != nil {
			b.Fatal(err)
		}
		d.Apply("line-3", "sha256:"+fmt.Sprintf("%064x", 1), "1.4.0", time.Now())
		fleet[i] = d
	}
	start := time.Now().Add(-61 * time.Minute).Truncate(time.Minute)
	appended0 := appendedSamples(b, p)
	first := make([]int64, devices)
	began := time.Now()
	for k := 0; k <= 60; k++ {
		at := start.Add(time.Duration(k) * time.Minute)
		each(fleet, func(i int, d *fleetsim.Device) {
			d.Poll("line-3", at)
			d.Tick(context.Background(), at)
			if reconnect {
				// The HTTP/2 stream is released just after the answer is
				// read: give it a moment, or the connection is not idle yet
				// and stays open.
				time.Sleep(20 * time.Millisecond)
				d.Reporter.CloseIdleConnections()
			}
			if k == 0 {
				first[i] = d.Reporter.Status().WireBytes
			}
		})
	}
	wall := time.Since(began)
	appended := appendedSamples(b, p) - appended0

	var wire, firstWire, sent int64
	for i, d := range fleet {
		st := d.Reporter.Status()
		if st.LastError != "" || st.QueuedSamples != 0 || st.DroppedSamples != 0 {
			b.Fatalf("%s: %+v", d.ID, st)
		}
		wire += st.WireBytes - first[i]
		firstWire += first[i]
		sent += st.SentSamples
	}
	if appended != sent {
		b.Fatalf("Prometheus appended %d samples, the reporters say %d were accepted", appended, sent)
	}
	last := start.Add(60 * time.Minute)
	if v, ok := p.Query(`count(berth_report_timestamp_seconds)`, last).(model.Vector); !ok || len(v) != 1 || int(v[0].Value) != devices {
		b.Fatalf("devices with a heartbeat in Prometheus at %s: %v, want %d", last, v, devices)
	}
	perDevice := float64(sent) / float64(devices) * 60 / 61
	b.ReportMetric(float64(wire)/float64(devices), "B/device/h")
	b.ReportMetric(float64(firstWire)/float64(devices), "first-B/device")
	b.ReportMetric(perDevice, "samples/device/h")
	b.ReportMetric(perDevice*float64(devices)/3600, "realtime-samples/s")
	b.ReportMetric(float64(appended)/wall.Seconds(), "prom-samples/s")
	b.ReportMetric(60, "requests/device/h")
}

// each runs f on every device, on a few goroutines.
func each(fleet []*fleetsim.Device, f func(i int, d *fleetsim.Device)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				f(i, fleet[i])
			}
		})
	}
	for i := range fleet {
		next <- i
	}
	close(next)
	wg.Wait()
}

// appendedSamples reads prometheus_tsdb_head_samples_appended_total from
// Prometheus' own /metrics.
func appendedSamples(b *testing.B, p *testenv.Prometheus) int64 {
	b.Helper()
	resp, err := p.HTTPClient().Get(p.URL() + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("Prometheus /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	var n float64
	for _, m := range mfs["prometheus_tsdb_head_samples_appended_total"].GetMetric() {
		n += m.GetCounter().GetValue()
	}
	return int64(n)
}
