package report

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/prometheus/prompb"

	"github.com/berth-dev/berth/internal/labels"
	"github.com/berth-dev/berth/reconcile/metrics"
)

// Reporter gathers the agent's metrics and pushes them by remote-write.
// Run drives it; Status may be called at any time.
type Reporter struct {
	o       *Options
	api     *remote.API
	client  *http.Client
	queue   *queue
	sampler *sampler

	wire         atomic.Int64 // bytes on the reporter's connections
	wireReported int64        // of wire, what the metrics have

	mu       sync.Mutex // guards the fields below
	failures int        // consecutive failed attempts
	next     time.Time  // no attempt before; zero: at once
	st       Status
}

// Status is what the reporter shows in berth status.
type Status struct {
	// Endpoint is the remote-write URL, credentials and query left out.
	Endpoint string `json:"endpoint"`
	// Device is the device id every series carries.
	Device string `json:"device"`
	// Interval between two gathers (a Go duration).
	Interval string `json:"interval"`
	// LastSuccess is when the endpoint last accepted a request.
	LastSuccess time.Time `json:"lastSuccess,omitzero"`
	// LastError says why the last attempt failed; empty after a success.
	LastError string `json:"lastError,omitempty"`
	// LastErrorTime is when it failed.
	LastErrorTime time.Time `json:"lastErrorTime,omitzero"`
	// Failures counts the attempts that failed since the last success.
	Failures int `json:"failures,omitempty"`
	// NextAttempt is when the reporter tries again after failures.
	NextAttempt time.Time `json:"nextAttempt,omitzero"`
	// QueuedSamples and QueuedBytes are what waits on disk.
	QueuedSamples int   `json:"queuedSamples"`
	QueuedBytes   int64 `json:"queuedBytes"`
	// QueuedSince is the time of the oldest queued sample.
	QueuedSince time.Time `json:"queuedSince,omitzero"`
	// SentSamples counts the samples the endpoint accepted since start.
	SentSamples int64 `json:"sentSamples"`
	// DroppedSamples counts the samples dropped since start (queue over
	// maxAge or maxSize, refused by the endpoint, corrupt on disk).
	DroppedSamples int64 `json:"droppedSamples,omitempty"`
	// WireBytes counts the bytes the reporter's connections sent and
	// received since start.
	WireBytes int64 `json:"wireBytes"`
}

// New checks o, opens the queue (samples queued before a restart are kept
// and sent first) and records the device in berth_device_info. It reaches
// no endpoint.
func New(o Options) (*Reporter, error) {
	opts, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &Reporter{o: opts}
	if r.client, err = newHTTPClient(opts, &r.wire); err != nil {
		return nil, err
	}
	r.api, err = remote.NewAPI(opts.URL,
		remote.WithAPIHTTPClient(r.client),
		remote.WithAPIPath(""),
		// One quick second try for a blip; the reporter's own backoff
		// spaces the attempts after that.
		remote.WithAPIBackoff(remote.BackoffConfig{Min: 500 * time.Millisecond, Max: time.Second, MaxRetries: 1}),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOptions, err)
	}
	if r.queue, err = openQueue(opts.QueueDir, opts.MaxAge, opts.MaxSize); err != nil {
		return nil, err
	}
	opts.Metrics.SetDevice(opts.Device, opts.Labels)
	extra := []prompb.Label{{Name: "device", Value: opts.Device}}
	for k, v := range labels.PrometheusLabels(opts.Labels) {
		extra = append(extra, prompb.Label{Name: k, Value: v})
	}
	var refresh int64
	if opts.Refresh > 0 {
		refresh = opts.Refresh.Milliseconds()
	}
	r.sampler = newSampler(extra, refresh)
	r.st = Status{Endpoint: Redact(opts.URL), Device: opts.Device, Interval: opts.Interval.String()}
	r.queueChanged()
	return r, nil
}

// Run gathers and sends every interval (with a little jitter, so that a
// fleet started at once spreads its requests) until ctx ends, then gathers
// a last time and sends or queues that within a few seconds.
func (r *Reporter) Run(ctx context.Context) {
	r.o.Log.Info("reporting to Prometheus by remote-write", "endpoint", r.st.Endpoint,
		"device", r.o.Device, "interval", r.o.Interval, "queued_samples", r.queue.samples)
	for {
		r.Tick(ctx)
		d := time.Duration(float64(r.o.Interval) * (0.95 + 0.1*rand.Float64()))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalTimeout)
			r.Tick(fctx)
			cancel()
			r.client.CloseIdleConnections()
			return
		case <-t.C:
		}
	}
}

// Tick gathers once and sends what is due: the new samples at once when
// nothing is queued, else the queue oldest first (the new samples last).
// While attempts back off after failures, the samples are only queued.
func (r *Reporter) Tick(ctx context.Context) {
	now := r.o.Now()
	r.o.Metrics.SetReportTime(now)
	families, err := r.o.Metrics.Registry().Gather()
	if err != nil {
		r.o.Log.Warn("gathering metrics to report", "error", err) // what was gathered is sent
	}
	req, n := r.sampler.sample(families, now.UnixMilli())
	r.mu.Lock()
	due := !now.Before(r.next)
	r.mu.Unlock()
	if r.queue.len() == 0 && due {
		switch err := r.send(ctx, req, n); {
		case err == nil:
			r.succeeded(now)
		case errors.Is(err, errRejected):
			r.dropped(metrics.DropRejected, n, err)
		default:
			r.failed(ctx, now, err)
			r.enqueue(req, now, n)
		}
	} else {
		r.enqueue(req, now, n)
		if due {
			r.drain(ctx, now)
		}
	}
	w := r.wire.Load()
	r.o.Metrics.ReportWire(w - r.wireReported)
	r.wireReported = w
}

// enqueue writes req to the queue and trims the queue to its bounds.
func (r *Reporter) enqueue(req *prompb.WriteRequest, now time.Time, n int) {
	if err := r.queue.add(req, now.UnixMilli(), n); err != nil {
		r.dropped(metrics.DropMaxSize, n, fmt.Errorf("cannot queue: %w", err))
	}
	for _, d := range r.queue.trim(now) {
		r.o.Log.Warn("report queue over its bound: dropped the oldest samples", "reason", d.reason,
			"samples", d.samples, "gathers", d.records,
			"from", time.UnixMilli(d.from).UTC(), "to", time.UnixMilli(d.to).UTC(),
			"max_age", r.o.MaxAge, "max_size", r.o.MaxSize)
		r.o.Metrics.ReportDropped(d.reason, d.samples)
		r.mu.Lock()
		r.st.DroppedSamples += int64(d.samples)
		r.mu.Unlock()
	}
	r.queueChanged()
}

// drain sends the queue oldest first, in batches, until it is empty or an
// attempt fails. A batch the endpoint refuses is sent again one gather at
// a time, so that only the gathers it refuses are dropped.
func (r *Reporter) drain(ctx context.Context, now time.Time) {
	defer r.queueChanged()
	before, since := r.queue.samples, r.queue.recs[0].ts
	defer func() {
		if r.queue.len() == 0 && before > 0 {
			r.o.Log.Info("queued samples delivered", "samples", before, "since", time.UnixMilli(since).UTC())
		}
	}()
	for r.queue.len() > 0 {
		reqs, samples := r.batch()
		if len(reqs) == 0 {
			continue // the head was corrupt and is gone
		}
		err := r.send(ctx, merge(reqs), samples)
		switch {
		case err == nil:
			r.queue.remove(len(reqs))
			r.succeeded(now)
			continue
		case !errors.Is(err, errRejected):
			r.failed(ctx, now, err)
			return
		}
		for _, req := range reqs {
			n := countSamples(req)
			switch err := r.send(ctx, req, n); {
			case err == nil:
				r.succeeded(now)
			case errors.Is(err, errRejected):
				r.dropped(metrics.DropRejected, n, err)
			default:
				r.failed(ctx, now, err)
				return
			}
			r.queue.remove(1)
		}
	}
}

// batch reads the oldest records, up to maxBatchSamples samples (at least
// one record). Records that cannot be read back are dropped.
func (r *Reporter) batch() ([]*prompb.WriteRequest, int) {
	var reqs []*prompb.WriteRequest
	samples := 0
	for i := 0; i < r.queue.len(); {
		rec := r.queue.recs[i]
		if len(reqs) > 0 && samples+rec.samples > maxBatchSamples {
			break
		}
		req, err := r.queue.read(rec)
		if err != nil {
			r.dropped(metrics.DropCorrupt, rec.samples, err)
			r.queue.removeAt(i)
			continue
		}
		reqs = append(reqs, req)
		samples += rec.samples
		i++
	}
	return reqs, samples
}

// send writes req (n samples) to the endpoint. An error wraps errRejected
// when the endpoint refused it for what it holds.
func (r *Reporter) send(ctx context.Context, req *prompb.WriteRequest, n int) error {
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*r.o.Timeout+2*time.Second)
	defer cancel()
	ctx, status := withStatus(ctx)
	_, err := r.api.Write(ctx, remote.WriteV1MessageType, req)
	if err == nil {
		r.o.Metrics.ReportSent(n)
		r.mu.Lock()
		r.st.SentSamples += int64(n)
		r.mu.Unlock()
		return nil
	}
	if code := int(status.code.Load()); rejects(code) {
		return fmt.Errorf("%w (HTTP %d): %w", errRejected, code, err)
	}
	return fmt.Errorf("remote write to %s: %w", r.st.Endpoint, err)
}

// rejects reports whether an HTTP status refuses a request for what it
// holds (400 for a sample out of order or too old, 413, 422...), so that
// sending it again would fail the same way. Answers that concern the
// endpoint or the credentials rather than the samples (401, 403, 404,
// 405, 407, 408, 429) are failures to retry: the samples stay queued
// until the configuration is fixed.
func rejects(code int) bool {
	switch code {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed,
		http.StatusProxyAuthRequired, http.StatusRequestTimeout, http.StatusTooManyRequests:
		return false
	}
	return code >= 400 && code < 500
}

// succeeded records an accepted request.
func (r *Reporter) succeeded(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failures > 0 {
		r.o.Log.Info("remote write works again", "endpoint", r.st.Endpoint, "failed_attempts", r.failures, "queued_samples", r.queue.samples)
	}
	r.failures, r.next = 0, time.Time{}
	r.st.LastSuccess, r.st.LastError, r.st.LastErrorTime = now, "", time.Time{}
}

// failed records a failed attempt, unless ctx ended, and backs off: the next attempt waits
// interval·(2^(n-1)-1) more, up to MaxBackoff.
func (r *Reporter) failed(ctx context.Context, now time.Time, err error) {
	if ctx.Err() != nil {
		// Stopping: the samples are queued for the next start.
		return
	}
	r.o.Metrics.ReportFailed()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures++
	extra := r.o.Interval * time.Duration(1<<min(r.failures-1, 16)-1)
	r.next = now.Add(min(extra, max(MaxBackoff, r.o.Interval)))
	r.st.LastError, r.st.LastErrorTime = err.Error(), now
	r.o.Log.Warn("remote write failed; samples stay queued", "error", err, "failed_attempts", r.failures,
		"queued_samples", r.queue.samples, "next_attempt", r.next.UTC().Format(time.RFC3339))
}

// dropped logs and counts n samples dropped for reason.
func (r *Reporter) dropped(reason string, n int, err error) {
	r.o.Log.Warn("report samples dropped", "reason", reason, "samples", n, "error", err)
	r.o.Metrics.ReportDropped(reason, n)
	r.mu.Lock()
	r.st.DroppedSamples += int64(n)
	r.mu.Unlock()
}

// queueChanged refreshes the queue's metrics and status.
func (r *Reporter) queueChanged() {
	r.o.Metrics.SetReportQueue(r.queue.samples, r.queue.size)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.st.QueuedSamples, r.st.QueuedBytes, r.st.QueuedSince = r.queue.samples, r.queue.size, time.Time{}
	if r.queue.len() > 0 {
		r.st.QueuedSince = time.UnixMilli(r.queue.recs[0].ts).UTC()
	}
}

// CloseIdleConnections drops the kept-alive connection to the endpoint, as
// a NAT that forgets idle connections does (benchmarks measure its cost).
func (r *Reporter) CloseIdleConnections() { r.client.CloseIdleConnections() }

// Status returns what the reporter shows in berth status.
func (r *Reporter) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.st
	st.Failures, st.NextAttempt = r.failures, r.next
	st.WireBytes = r.wire.Load()
	return st
}
