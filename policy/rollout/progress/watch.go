package progress

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/berth-dev/berth/policy/rollout"
	"github.com/berth-dev/berth/policy/rollout/statement"
)

// Outcome is how a watch ended.
type Outcome string

// The outcomes of Watch.
const (
	// Complete: the rollout settled (every wave open, every device healthy,
	// failed or unseen) and no device failed.
	Complete Outcome = "complete"
	// Settled: the rollout settled with failures the breaker tolerated.
	Settled Outcome = "settled"
	// Paused: an open wave failed past the threshold: the pause statement
	// was signed and pushed (or pushing it failed: see the error).
	Paused Outcome = "paused"
	// Stopped: the context ended (a deadline, an interrupt) before the
	// rollout settled.
	Stopped Outcome = "stopped"
)

// WatchOptions configure Watch.
type WatchOptions struct {
	// Breaker judges every report; nil: none, Watch only waits for the
	// rollout to settle.
	Breaker *Breaker
	// Poll is the time between two reads. Default 30s.
	Poll time.Duration
	// MaxErrors is how many reads in a row may fail (Prometheus
	// unreachable, overloaded) before Watch gives up. Default 5.
	MaxErrors int
	// Pause is called once, when the breaker trips, with the report and
	// the trips: it signs and pushes the pause (or abort) statement.
	// Required with a Breaker.
	Pause func(ctx context.Context, r *Report, trips []Trip) error
	// Observe, when not nil, sees every report read, or the error of a
	// failed read.
	Observe func(r *Report, err error)
}

// WatchResult is how a watch ended.
type WatchResult struct {
	Outcome Outcome `json:"outcome"`
	// Report is the last report read (nil when none could be).
	Report *Report `json:"report,omitempty"`
	// Trips are the waves that failed past the threshold (Paused).
	Trips []Trip `json:"trips,omitempty"`
	// Polls counts the reads.
	Polls int `json:"polls"`
	// Tripped is when the breaker tripped (Paused).
	Tripped time.Time `json:"tripped,omitzero"`
}

// Watch reads the rollout of q.Digest (see Read) every o.Poll, evaluated
// at the time of each read, until it settles, an open wave trips the
// breaker, or ctx ends. When the breaker trips it calls o.Pause once and
// returns Paused, with Pause's error if it failed. A read that fails is
// retried at the next poll; o.MaxErrors failures in a row end the watch
// with the last error. When ctx ends first the result is Stopped and the
// error wraps ctx.Err().
func Watch(ctx context.Context, prom Querier, p Placement, q Query, o WatchOptions) (*WatchResult, error) {
	if o.Breaker != nil && o.Pause == nil {
		return nil, fmt.Errorf("progress: Watch with a breaker needs a Pause function")
	}
	poll := cmp.Or(o.Poll, 30*time.Second)
	maxErrors := cmp.Or(o.MaxErrors, 5)
	res := &WatchResult{}
	errs := 0
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		rq := q
		if rq.At.IsZero() {
			rq.At = time.Now()
		}
		r, err := Read(ctx, prom, p, rq)
		res.Polls++
		if o.Observe != nil {
			o.Observe(r, err)
		}
		switch {
		case err != nil && ctx.Err() != nil:
			res.Outcome = Stopped
			return res, fmt.Errorf("rollout of %s not settled: %w", q.Digest, ctx.Err())
		case err != nil:
			if errs++; errs >= maxErrors {
				return res, fmt.Errorf("%d reads of the rollout of %s failed in a row, the last: %w", errs, q.Digest, err)
			}
		default:
			errs = 0
			res.Report = r
			if trips := o.Breaker.check(r); len(trips) > 0 {
				res.Outcome, res.Trips, res.Tripped = Paused, trips, time.Now()
				if err := o.Pause(ctx, r, trips); err != nil {
					return res, fmt.Errorf("the rollout of %s must be paused (%s), but the pause statement was not pushed: %w", q.Digest, Reason(trips, 0), err)
				}
				return res, nil
			}
			if r.Settled {
				res.Outcome = Settled
				if r.Complete {
					res.Outcome = Complete
				}
				return res, nil
			}
		}
		select {
		case <-ctx.Done():
			res.Outcome = Stopped
			return res, fmt.Errorf("rollout of %s not settled: %w", q.Digest, ctx.Err())
		case <-tick.C:
		}
	}
}

// Reason says why trips pause a rollout, in at most max bytes (0: no
// limit), for the pause statement's reason: the waves, their counts and
// the failing devices, the list cut short with "…" when too long.
func Reason(trips []Trip, max int) string {
	parts := make([]string, len(trips))
	for i, t := range trips {
		parts[i] = t.String()
	}
	s := "berth rollout watch: " + strings.Join(parts, "; ")
	if max <= 0 || len(s) <= max {
		return s
	}
	const more = " …"
	cut := max - len(more)
	for cut > 0 && !utf8Start(s[cut]) {
		cut--
	}
	return s[:cut] + more
}

// utf8Start reports whether b starts a UTF-8 sequence.
func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

// check is Check, none without a breaker.
func (b *Breaker) check(r *Report) []Trip {
	if b == nil {
		return nil
	}
	return b.Check(r)
}

// Statement is the statement the breaker signs when trips stop the
// rollout of digest: action (pause, or abort) signed at at, the trips as
// its reason (cut to statement.MaxReason).
func Statement(action rollout.Action, digest string, trips []Trip, at time.Time) statement.Statement {
	return statement.Statement{Action: action, Digest: digest, SignedAt: at.UTC().Truncate(time.Second), Reason: Reason(trips, statement.MaxReason)}
}
