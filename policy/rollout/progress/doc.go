// Package progress reads, for a release, how far its rollout has come
// across the fleet, from what the devices report to Prometheus by
// remote-write (see package report): the publishing side of fleet status,
// for `berth rollout status` and `berth rollout watch` in CI. berth runs
// no fleet server: Prometheus (or Mimir, Thanos, VictoriaMetrics) holds
// the devices' reports and this package asks it with PromQL.
//
// For a release digest, [Read] lists the devices (berth_device_info), puts
// each in its wave of the release's rollout plan (the device's own report,
// berth_rollout_wave_info, when it has one; else the plan's placement of
// its id and labels, given as a [Placement]), and counts per wave the
// devices on the release (berth_source_applied_info), healthy, failed
// (berth_source_last_outcome failed or refused for that digest, with their
// ids), waiting and why (berth_rollout_waiting), and unseen (no heartbeat,
// berth_report_timestamp_seconds, for longer than a given time).
//
// [Breaker] is the circuit breaker of `berth rollout watch`: a pure
// function of a [Report] that says which open waves failed too much.
package progress
