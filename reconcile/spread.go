package reconcile

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/berth-dev/berth/policy/rollout"
	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/state"
)

// Spreading a rollout's verifications and downloads. Without it every
// device of the fleet verifies and downloads a new release in the interval
// it first sees it, while only the first wave may adopt it: the registry
// serves the whole fleet at once, and the first wave waits in that queue.
// The manifest carries a copy of the plan (state.RolloutAnnotation,
// written by `berth push` and signed with the manifest), so a device that
// has read the manifest (checked against its digest) knows its wave. A
// device whose wave opens later than one interval from now verifies and
// downloads the release at a time of its own (spreadAt): not while an
// earlier wave adopts it, and well before its own wave opens, so that it
// is ready then. Until then a poll costs the tag alone.
//
// The copy of the plan is read before the signature is checked: it only
// says when to check it. A manifest that is not signed is refused at that
// time, as it is at once by the devices of the waves already open (the
// canaries are the early warning). Someone who can change what the tag
// points to can hold a device back either way; they cannot make it adopt
// anything. berth.yaml's plan, verified, still decides when the device
// adopts the release (gate).

// spreadHold is the verification and download of a release a device
// holds back until its time in the spread.
type spreadHold struct {
	digest string
	at     time.Time
	msg    string
}

// spread holds the release back until the device's time to verify and
// download it, when the release's plan spreads them (see above).
func (t *attempt) spread(ctx context.Context) error {
	a, digest := t.a, t.rev.Digest
	if !t.spreads() {
		return nil
	}
	now := a.now()
	if h := t.s.spread; h != nil && h.digest == digest {
		if now.Before(h.at) {
			return t.hold(store.WaitWave, h.msg, h.at)
		}
		return nil
	}
	m, err := t.o.remote.Unverified(ctx, t.ref)
	if err != nil {
		return nil // verify reports it
	}
	t.read = m // verify checks its signature, without reading it again
	ann := m.Manifest.Annotations
	value, ok := ann[state.RolloutAnnotation]
	if !ok {
		return nil
	}
	plan, err := state.ParseRolloutAnnotation(value)
	if err != nil {
		a.log.Warn("the release's copy of its rollout plan is unreadable: verifying and downloading it now", "source", t.name, "digest", digest, "error", err)
		return nil
	}
	created, err := rollout.Created(ann)
	if err != nil || now.Before(created) {
		return nil // gate says why, once verified
	}
	pl := rollout.Place(plan, a.device, t.repository())
	all := rollout.Opens(plan, created)
	opens := all[pl.Wave]
	rec := a.release(t.name, digest)
	if rec == nil {
		rec = &store.Release{Digest: digest, FirstSeen: now}
	}
	interval := t.s.cfg.Interval
	busy := interval + time.Duration(t.s.cfg.Jitter*float64(interval))
	at := spreadAt(rec.FirstSeen, opens, all[:pl.Wave], interval, busy, spreadFraction(a.device.ID, digest))
	if !now.Before(at) {
		return nil
	}
	// The first sight, which the time is computed from, survives restarts;
	// the wave is shown in status until the verified plan replaces it. The
	// created time and the plan's end, which the statements' look-ups
	// follow, are recorded from the verified manifest only (gate).
	rec.Wave, rec.Opens, rec.Verdict = pl.Name, opens, string(rollout.WaitWave)
	a.putRelease(t.name, *rec)
	h := &spreadHold{digest: digest, at: at, msg: fmt.Sprintf("waiting for wave %s (opens %s); verifying and downloading it from %s, spread over the time before the wave opens so that the earlier waves get the registry first",
		pl.Name, rollout.FormatTime(opens), rollout.FormatTime(at))}
	t.s.spread = h
	return t.hold(store.WaitWave, h.msg, at)
}

// spreads reports whether the attempt may spread its verification and
// download: an OCI source whose signatures are checked, on an automatic
// poll (not a technician's reconcile, a rollback or an explicit digest),
// for a release not in the store yet, and not a download the download
// windows already restrict (it waits for them and then takes its first
// chance).
func (t *attempt) spreads() bool {
	r, digest := t.req, t.rev.Digest
	switch {
	case t.s.file != "", t.s.cfg.InsecureSkipVerify, t.s.cfg.Windows.Download != nil:
		return false
	case r.force, r.rollback, r.ignoreWindows, r.digest != "", t.revertFrom != "":
		return false
	case t.applied != nil && t.applied.Digest == digest:
		return false
	}
	return !t.a.store.Has(digest)
}

// spreadAt is when a device that first saw a release at seen, and whose
// wave opens at opens, verifies and downloads it. The stretch is from one
// interval after seen (the interval the waves open at once have to
// themselves) to a margin before opens (a quarter of the time from seen,
// at least one interval, so that a slow download is done in time), less
// the intervals in which the earlier waves adopt it (from each opening in
// earlier, for busy: the interval and its jitter). The device's time is
// frac (in [0, 1), stable per device and release) of the way through what
// is left. A wave that opens within two intervals of seen leaves no room
// to spread: the time is the end of the stretch, or seen when that is
// earlier.
func spreadAt(seen, opens time.Time, earlier []time.Time, interval, busy time.Duration, frac float64) time.Time {
	lo, hi := seen.Add(interval), opens.Add(-max(interval, opens.Sub(seen)/4))
	switch {
	case !hi.After(seen):
		return seen
	case !lo.Before(hi):
		return hi
	}
	free := []span{{lo, hi}}
	for _, o := range earlier {
		free = without(free, span{o, o.Add(busy)})
	}
	var total time.Duration
	for _, f := range free {
		total += f.to.Sub(f.from)
	}
	if total <= 0 { // the earlier waves take the whole stretch
		return lo.Add(time.Duration(frac * float64(hi.Sub(lo))))
	}
	pos := time.Duration(frac * float64(total))
	for _, f := range free {
		d := f.to.Sub(f.from)
		if pos < d {
			return f.from.Add(pos)
		}
		pos -= d
	}
	return free[len(free)-1].to
}

// span is a stretch of time, from included, to excluded.
type span struct{ from, to time.Time }

// without removes c from the spans.
func without(spans []span, c span) []span {
	var out []span
	for _, s := range spans {
		if !c.from.Before(s.to) || !s.from.Before(c.to) {
			out = append(out, s)
			continue
		}
		if s.from.Before(c.from) {
			out = append(out, span{s.from, c.from})
		}
		if c.to.Before(s.to) {
			out = append(out, span{c.to, s.to})
		}
	}
	return out
}

// spreadFraction is the device's place, in [0, 1), in the spread of the
// release digest: from SHA-256(id "\n" digest), so that it is stable
// across restarts and differs from one release to the next.
func spreadFraction(id, digest string) float64 {
	sum := sha256.Sum256([]byte(id + "\n" + digest))
	return float64(binary.BigEndian.Uint64(sum[:8])>>11) / (1 << 53)
}
