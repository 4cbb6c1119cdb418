// Package report pushes the agent's metrics to Prometheus by remote-write,
// so that a fleet behind NAT and firewalls, which nothing can scrape, still
// reports what it runs.
//
// Every interval a [Reporter] gathers the agent's registry (what /metrics
// serves: the reconcile, registry and runtime series, and the fleet series
// of package metrics), adds the label device and the device's labels to
// every series, and sends the samples with the Prometheus remote-write 1.0
// protocol (protobuf + snappy; prompb and client_golang's remote API do the
// encoding and the HTTP exchange). Samples of a series that disappeared
// (an old digest's berth_source_applied_info, a wait that ended) get a
// staleness marker, so instant queries stop seeing them at once. To keep a
// metered link to a few tens of kilobytes per hour, a gather sends the
// series that are new and the fleet series that changed
// (metrics.FleetSeries: device, applied release, last outcome, wave,
// waiting, and the heartbeat berth_report_timestamp_seconds, which changes
// every time); every Refresh (4 minutes, under Prometheus' default
// 5-minute lookback, so that instant queries always see every series) it
// sends a snapshot of all of them. Counters and runtime gauges thus have a
// resolution of 4 minutes in Prometheus: use ranges of 10 minutes or more
// in rate() and increase().
//
// While the endpoint is unreachable (a connection error, a timeout, HTTP
// 5xx or 429) the samples are queued on disk in the queue folder, one file
// per gather, and sent oldest first, with their original timestamps, when
// it answers again. The queue is bounded by MaxAge and MaxSize: past
// them the oldest samples are dropped, logged, and counted in
// berth_report_samples_dropped_total. A request the endpoint refuses for
// what it holds (HTTP 4xx) is dropped the same way rather than retried
// forever. Failed attempts back off exponentially (up to MaxBackoff)
// while gathering goes on at every interval.
//
// Order matters to Prometheus: it refuses a sample older than the newest
// one of its series. The reporter sends every sample through the one FIFO
// queue, so a series' samples always arrive in time order; and it sends
// the live samples straight away only when nothing is queued. Prometheus
// also refuses samples older than its head block's window (about an hour
// behind the newest sample it holds from any device) unless
// storage.tsdb.out_of_order_time_window is set in its configuration: set it
// to at least queue.maxAge so that a device offline for a shift can
// deliver its backlog.
//
// Reporting never affects reconciling: the reporter runs on its own
// goroutine, only reads the metrics, and its failures are logged (at most
// once per attempt, and attempts back off) and shown by [Reporter.Status].
package report
