package report

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/reconcile/metrics"
)

// logBuffer collects logs for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t.Truncate(time.Millisecond)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// device is a reporter under test with its metrics, clock and logs.
type device struct {
	*Reporter
	m     *metrics.Metrics
	clock *clock
	logs  *logBuffer
	dir   string
}

// newDevice makes a reporter for id pushing to url; edit changes its
// options before New.
func newDevice(t *testing.T, id, url string, start time.Time, edit func(*Options)) *device {
	t.Helper()
	d := &device{m: metrics.New(), clock: newClock(start), logs: &logBuffer{}, dir: filepath.Join(t.TempDir(), "queue")}
	o := Options{
		URL: url, Insecure: strings.HasPrefix(url, "http://"), Interval: 10 * time.Second,
		QueueDir: d.dir, Device: id, Labels: map[string]string{"ring": "canary", "line": "3"},
		Metrics: d.m, Now: d.clock.Now,
		Log: slog.New(slog.NewTextHandler(d.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&o)
	}
	d.dir = o.QueueDir
	r, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	d.Reporter = r
	return d
}

// tick advances the clock by d (none for 0) and ticks once.
func (d *device) tick(step time.Duration) time.Time {
	now := d.clock.Add(step)
	d.Tick(context.Background())
	return now
}

// queued returns the timestamps of the records in the queue folder.
func (d *device) queued(t *testing.T) []int64 {
	t.Helper()
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, e := range entries {
		if r, ok := parseRecordName(e.Name()); ok {
			out = append(out, r.ts)
		}
	}
	return out
}

// sampleTimes returns the timestamps (ms) of the raw samples of a series
// selector over the last window, for one series.
func sampleTimes(t *testing.T, p *testenv.Prometheus, selector string, window time.Duration) []int64 {
	t.Helper()
	m := p.Matrix(selector + "[" + model.Duration(window).String() + "]")
	if len(m) != 1 {
		t.Fatalf("%s: %d series, want 1: %v", selector, len(m), m)
	}
	var out []int64
	for _, s := range m[0].Values {
		out = append(out, int64(s.Timestamp))
	}
	slices.Sort(out)
	return out
}

// droppedCounter returns berth_report_samples_dropped_total{reason} of the
// device's metrics.
func droppedCounter(t *testing.T, d *device, reason string) float64 {
	t.Helper()
	mfs, err := d.m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "berth_report_samples_dropped_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
