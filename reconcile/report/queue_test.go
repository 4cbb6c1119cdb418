package report

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestOutageDeliveredWithOriginalTimestamps stops Prometheus while the
// device keeps gathering, restarts the agent (a new Reporter on the same
// queue) in the middle of the outage, then brings Prometheus back: every
// gather of the outage arrives, each at the time it was taken.
func TestOutageDeliveredWithOriginalTimestamps(t *testing.T) {
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{})
	start := time.Now().Add(-10 * time.Minute)
	d := newDevice(t, "press-07", p.WriteURL(), start, nil)
	var want []int64
	for i := range 3 {
		want = append(want, d.tick(time.Duration(min(i, 1))*10*time.Second).UnixMilli())
	}
	if st := d.Status(); st.QueuedSamples != 0 || st.SentSamples == 0 {
		t.Fatalf("before the outage: %+v", st)
	}

	p.Stop()
	for range 4 {
		want = append(want, d.tick(10*time.Second).UnixMilli())
	}
	st := d.Status()
	if st.Failures == 0 || st.LastError == "" || st.QueuedSamples == 0 || len(d.queued(t)) != 4 {
		t.Fatalf("during the outage: %+v, queue %v\nlogs:\n%s", st, d.queued(t), d.logs)
	}
	if !strings.Contains(d.logs.String(), "remote write failed; samples stay queued") {
		t.Fatalf("the failure is not logged:\n%s", d.logs)
	}
	// Attempts back off: after the failures so far, the next tick only
	// queues (no request is made while Prometheus is down anyway, so the
	// proof is the failure count: it must not grow at every tick).
	failures := st.Failures
	want = append(want, d.tick(10*time.Second).UnixMilli())
	if d.Status().Failures != failures {
		t.Fatalf("attempted again inside the backoff: %d failures, was %d", d.Status().Failures, failures)
	}

	// The agent restarts: the queue survives on disk.
	d2 := newDevice(t, "press-07", p.WriteURL(), d.clock.Now(), func(o *Options) { o.QueueDir = d.dir })
	if got := d2.Status().QueuedSamples; got != d.Status().QueuedSamples {
		t.Fatalf("queue after a restart holds %d samples, want %d", got, d.Status().QueuedSamples)
	}
	want = append(want, d2.tick(10*time.Second).UnixMilli())

	p.Start()
	want = append(want, d2.tick(10*time.Second).UnixMilli())
	if st := d2.Status(); st.QueuedSamples != 0 || st.Failures != 0 || st.LastError != "" {
		t.Fatalf("after Prometheus came back: %+v\nlogs:\n%s", st, d2.logs)
	}
	if len(d2.queued(t)) != 0 {
		t.Fatalf("queue files left: %v", d2.queued(t))
	}
	got := sampleTimes(t, p, `berth_report_timestamp_seconds{device="press-07"}`, time.Hour)
	if !slices.Equal(got, want) {
		t.Fatalf("heartbeat sample times:\n got %v\nwant %v", got, want)
	}
	// The value of the heartbeat is the time it was taken: the samples
	// were not re-stamped when sent.
	m := p.Matrix(`berth_report_timestamp_seconds{device="press-07"}[1h]`)
	for _, s := range m[0].Values {
		if int64(float64(s.Value)*1000) != int64(s.Timestamp) {
			t.Fatalf("sample at %d has value %v", s.Timestamp, s.Value)
		}
	}
	// A snapshot series from before the restart arrived too.
	if v := p.Matrix(`go_goroutines{device="press-07"}[1h]`); len(v) != 1 || len(v[0].Values) < 2 {
		t.Fatalf("go_goroutines samples: %v", v)
	}
}

// TestQueueDropsOldest keeps the endpoint down past the queue's bounds:
// the oldest gathers go first, the logs and berth_report_samples_dropped_total
// say so, and what is kept arrives once the endpoint answers.
func TestQueueDropsOldest(t *testing.T) {
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{})
	start := time.Now().Add(-30 * time.Minute)
	d := newDevice(t, "press-07", p.WriteURL(), start, func(o *Options) {
		o.Refresh = -1   // a snapshot every time: records of similar size
		o.MaxSize = 8000 // a few records
		o.MaxAge = 10 * time.Minute
	})
	p.Stop()
	var times []int64
	for range 12 {
		times = append(times, d.tick(10*time.Second).UnixMilli())
	}
	kept := d.queued(t)
	if len(kept) < 2 || len(kept) > 8 {
		t.Fatalf("queue holds %d records: want a few under maxSize", len(kept))
	}
	if !slices.Equal(kept, times[len(times)-len(kept):]) {
		t.Fatalf("queue holds %v, want the newest %d of %v", kept, len(kept), times)
	}
	st := d.Status()
	if st.DroppedSamples == 0 || st.QueuedBytes > 8000 {
		t.Fatalf("status: %+v", st)
	}
	logs := d.logs.String()
	if !strings.Contains(logs, "report queue over its bound: dropped the oldest samples") || !strings.Contains(logs, "reason=max_size") {
		t.Fatalf("the drop is not logged:\n%s", logs)
	}
	if got := droppedCounter(t, d, "max_size"); got != float64(st.DroppedSamples) {
		t.Fatalf("berth_report_samples_dropped_total{reason=max_size} = %v, want %d", got, st.DroppedSamples)
	}

	// Past maxAge, what is queued goes too.
	d.clock.Add(11 * time.Minute)
	times = append(times, d.tick(0).UnixMilli())
	if q := d.queued(t); len(q) != 1 || q[0] != times[len(times)-1] {
		t.Fatalf("after maxAge the queue holds %v, want only %d", q, times[len(times)-1])
	}
	if !strings.Contains(d.logs.String(), "reason=max_age") || droppedCounter(t, d, "max_age") == 0 {
		t.Fatalf("the max_age drop is not logged or counted:\n%s", d.logs)
	}

	p.Start()
	d.clock.Add(10 * time.Minute) // past any backoff
	last := d.tick(0).UnixMilli()
	if st := d.Status(); st.QueuedSamples != 0 {
		t.Fatalf("after Prometheus came back: %+v\nlogs:\n%s", st, d.logs)
	}
	got := sampleTimes(t, p, `berth_report_timestamp_seconds{device="press-07"}`, time.Hour)
	if want := []int64{times[len(times)-1], last}; !slices.Equal(got, want) {
		t.Fatalf("Prometheus holds %v, want only what was kept %v", got, want)
	}
}

// TestTooOldSamples shows the limit the README documents: Prometheus
// refuses samples older than about an hour behind the newest it holds
// unless storage.tsdb.out_of_order_time_window covers them. A refused
// gather is dropped (it would be refused forever) and does not hold up the
// ones behind it; with the window set, the same backlog is accepted.
func TestTooOldSamples(t *testing.T) {
	for _, window := range []time.Duration{0, 24 * time.Hour} {
		t.Run(fmt.Sprintf("window=%s", window), func(t *testing.T) {
			p := testenv.StartPrometheus(t, testenv.PrometheusOptions{OutOfOrderWindow: window})
			now := time.Now()
			// Another device keeps Prometheus' head at the present.
			live := newDevice(t, "press-01", p.WriteURL(), now, nil)
			live.tick(0)

			// This one was offline for 3 hours: its backlog is old.
			off := newDevice(t, "press-02", p.WriteURL(), now.Add(-3*time.Hour), func(o *Options) { o.URL = "http://127.0.0.1:1/api/v1/write" })
			old := off.tick(0).UnixMilli()
			if off.Status().QueuedSamples == 0 {
				t.Fatalf("not queued: %+v", off.Status())
			}
			back := newDevice(t, "press-02", p.WriteURL(), now, func(o *Options) { o.QueueDir = off.dir })
			fresh := back.tick(0).UnixMilli()
			st := back.Status()
			if st.QueuedSamples != 0 || st.Failures != 0 {
				t.Fatalf("status: %+v\nlogs:\n%s", st, back.logs)
			}
			got := sampleTimes(t, p, `berth_report_timestamp_seconds{device="press-02"}`, 4*time.Hour)
			if window == 0 {
				if !slices.Equal(got, []int64{fresh}) || st.DroppedSamples == 0 || !strings.Contains(back.logs.String(), "reason=rejected") {
					t.Fatalf("without a window: Prometheus holds %v (want only %d), status %+v\nlogs:\n%s", got, fresh, st, back.logs)
				}
				return
			}
			if !slices.Equal(got, []int64{old, fresh}) || st.DroppedSamples != 0 {
				t.Fatalf("with a window: Prometheus holds %v, want %v; status %+v\nlogs:\n%s", got, []int64{old, fresh}, st, back.logs)
			}
		})
	}
}

// TestTLSAndBasicAuth reports to a Prometheus that serves HTTPS with a
// private CA and requires basic auth. A wrong password keeps the samples
// queued (a credentials problem is no reason to drop them); the rotated
// password file is read at the next attempt and the backlog arrives.
func TestTLSAndBasicAuth(t *testing.T) {
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{TLS: true, BasicAuth: true})
	pwFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pwFile, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := newDevice(t, "press-07", p.WriteURL(), time.Now().Add(-5*time.Minute), func(o *Options) {
		o.CAFile = p.CAFile
		o.BasicAuth = &BasicAuth{Username: p.Username, PasswordFile: pwFile}
	})
	first := d.tick(0).UnixMilli()
	st := d.Status()
	if st.QueuedSamples == 0 || !strings.Contains(st.LastError, "401") {
		t.Fatalf("with a wrong password: %+v", st)
	}
	if err := os.WriteFile(pwFile, []byte(p.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	second := d.tick(10 * time.Second).UnixMilli()
	if st := d.Status(); st.QueuedSamples != 0 || st.LastError != "" {
		t.Fatalf("after fixing the password: %+v\nlogs:\n%s", st, d.logs)
	}
	if got := sampleTimes(t, p, `berth_report_timestamp_seconds{device="press-07"}`, time.Hour); !slices.Equal(got, []int64{first, second}) {
		t.Fatalf("Prometheus holds %v, want %v", got, []int64{first, second})
	}
	if strings.Contains(d.logs.String(), p.Password) {
		t.Fatal("the password is in the logs")
	}
}

// TestCorruptRecordDropped damages a queued record: it is dropped and
// counted, and the records around it are sent.
func TestCorruptRecordDropped(t *testing.T) {
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{})
	d := newDevice(t, "press-07", "http://127.0.0.1:1/api/v1/write", time.Now().Add(-5*time.Minute), nil)
	var times []int64
	for range 3 {
		times = append(times, d.tick(10*time.Second).UnixMilli())
	}
	entries, _ := os.ReadDir(d.dir)
	if len(entries) != 3 {
		t.Fatalf("queue: %v", entries)
	}
	if err := os.WriteFile(filepath.Join(d.dir, entries[1].Name()), []byte("BRQ1garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	back := newDevice(t, "press-07", p.WriteURL(), d.clock.Now(), func(o *Options) { o.QueueDir = d.dir })
	last := back.tick(10 * time.Second).UnixMilli()
	if st := back.Status(); st.QueuedSamples != 0 || st.DroppedSamples == 0 || !strings.Contains(back.logs.String(), "reason=corrupt") {
		t.Fatalf("status %+v\nlogs:\n%s", st, back.logs)
	}
	want := []int64{times[0], times[2], last}
	if got := sampleTimes(t, p, `berth_report_timestamp_seconds{device="press-07"}`, time.Hour); !slices.Equal(got, want) {
		t.Fatalf("Prometheus holds %v, want %v", got, want)
	}
}

// TestRunStopsWithContext runs the loop and stops it: the last gather is
// sent on the way out.
func TestRunStopsWithContext(t *testing.T) {
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{})
	d := newDevice(t, "press-07", p.WriteURL(), time.Now(), func(o *Options) { o.Now = nil; o.Interval = time.Hour })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	testenv.Eventually(t, 10*time.Second, func() bool { return d.Status().SentSamples > 0 }, "first push")
	sent := d.Status().SentSamples
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if d.Status().SentSamples <= sent {
		t.Fatalf("no last push: %+v", d.Status())
	}
}
