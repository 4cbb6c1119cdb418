package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestParseReport checks report.prometheus: its values, relative paths,
// and the defaults.
func TestParseReport(t *testing.T) {
	c, err := parseFile(t, "testdata/good/report.yaml", "/etc/berth/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &PrometheusReport{
		RemoteWrite: "https://metrics.plant.local/api/v1/write", Interval: 30 * time.Second,
		CAFile: "/etc/berth/metrics-ca.pem", BearerTokenFile: "/etc/berth/metrics.token",
		Queue: ReportQueue{MaxAge: 12 * time.Hour, MaxSize: 8 << 20},
	}
	if !reflect.DeepEqual(c.Report.Prometheus, want) {
		t.Errorf("got  %+v\nwant %+v", c.Report.Prometheus, want)
	}

	minimal := "sources: [{name: a, url: oci://r.local/a, ref: {tag: t}, insecureSkipVerify: true}]\n"
	c, err = Parse(name, []byte(minimal))
	if err != nil || c.Report.Prometheus != nil {
		t.Fatalf("without report: %+v, %v", c.Report, err)
	}
	for _, tc := range []struct{ yaml, size string }{
		{"{remoteWrite: 'http://127.0.0.1:9090/api/v1/write', insecure: true}", ""},
		{"{remoteWrite: 'https://m.local/w?tenant=a', basicAuth: {username: u, passwordFile: pw}, queue: {maxSize: 1048576}}", "1048576"},
		{"{remoteWrite: 'https://m.local/w', queue: {maxSize: 1.5GB}}", "1.5GB"},
	} {
		c, err := Parse("/etc/berth/agent.yaml", []byte(minimal+"report: {prometheus: "+tc.yaml+"}\n"))
		if err != nil {
			t.Fatalf("%s: %v", tc.yaml, err)
		}
		r := c.Report.Prometheus
		if r.Interval != DefaultReportInterval || r.Queue.MaxAge != DefaultReportMaxAge {
			t.Errorf("%s: defaults %+v", tc.yaml, r)
		}
		switch tc.size {
		case "":
			if r.Queue.MaxSize != DefaultReportMaxSize || !r.Insecure {
				t.Errorf("%s: %+v", tc.yaml, r)
			}
		case "1048576":
			if r.Queue.MaxSize != 1<<20 || r.BasicAuth == nil || r.BasicAuth.PasswordFile != "/etc/berth/pw" {
				t.Errorf("%s: %+v %+v", tc.yaml, r, r.BasicAuth)
			}
		case "1.5GB":
			if r.Queue.MaxSize != 1_500_000_000 {
				t.Errorf("%s: maxSize %d", tc.yaml, r.Queue.MaxSize)
			}
		}
	}
	if _, err := Parse(name, []byte(minimal+"report: {prometheus: {remoteWrite: 'https://m.local/w#frag'}}\n")); err == nil || !strings.Contains(err.Error(), "fragment") {
		t.Errorf("a fragment: %v", err)
	}
}

// TestCheckReport checks the files report.prometheus names.
func TestCheckReport(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sources := "stateDir: " + dir + "\nsources: [{name: a, url: oci://r.local/a, ref: {tag: t}, insecureSkipVerify: true}]\n"
	empty := write("empty.token", "\n")
	notPEM := write("ca.pem", "not a certificate")
	c, err := Parse(filepath.Join(dir, "agent.yaml"), []byte(sources+"report:\n  prometheus:\n    remoteWrite: https://m.local/w\n    caFile: "+notPEM+"\n    bearerTokenFile: "+empty+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Check()
	if err == nil || !strings.Contains(err.Error(), "report.prometheus.caFile: "+notPEM+" holds no PEM certificate") ||
		!strings.Contains(err.Error(), "report.prometheus.bearerTokenFile: "+empty+" is empty") {
		t.Fatalf("Check: %v", err)
	}
	c, err = Parse(filepath.Join(dir, "agent.yaml"), []byte(sources+"report: {prometheus: {remoteWrite: 'https://m.local/w', basicAuth: {username: u, passwordFile: missing}}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Check(); err == nil || !strings.Contains(err.Error(), "agent.yaml:3: report.prometheus.basicAuth.passwordFile: cannot read "+filepath.Join(dir, "missing")) {
		t.Fatalf("Check: %v", err)
	}
	pw := write("pw", "secret\n")
	c, _ = Parse(filepath.Join(dir, "agent.yaml"), []byte(sources+"report: {prometheus: {remoteWrite: 'https://m.local/w', basicAuth: {username: u, passwordFile: "+pw+"}}}\n"))
	if err := c.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
}
