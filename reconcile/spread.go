package reconcile

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/berth-dev/berth/policy/rollout"
	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/state"
)

// Spreading the downloads of a rollout. Without it every device of the
// fleet downloads a new release in the interval it first sees it, while
// only the first wave may adopt it: the registry serves the whole fleet at
// once, and the first wave waits in that queue. The manifest carries a
// signed copy of the plan (state.RolloutAnnotation, written by `berth
// push`), so once the manifest is verified a device knows its wave before
// it downloads anything else. A device whose wave opens later than one
// interval from now downloads at a time of its own (spreadAt), in the
// first half of the time until its wave opens and at least one interval
// before it, so that it is still ready when its wave opens. berth.yaml's
// plan still decides when the device adopts the release (gate); the
// annotation only says when to download it.

// spread holds the download of the verified revision back until the
// device's time to download it, when its plan lets it (see above).
func (t *attempt) spread() error {
	a, digest := t.a, t.rev.Digest
	if !t.spreads() {
		return nil
	}
	plan, err := state.ParseRolloutAnnotation(t.rev.Annotations[state.RolloutAnnotation])
	if err != nil {
		a.log.Warn("the release's copy of its rollout plan is unreadable: downloading it now", "source", t.name, "digest", digest, "error", err)
		return nil
	}
	created, err := rollout.Created(t.rev.Annotations)
	now := a.now()
	if err != nil || now.Before(created) {
		return nil // gate says why
	}
	pl := rollout.Place(plan, a.device, t.repository())
	opens := created.Add(plan.Waves[pl.Wave].After)
	rec := a.release(t.name, digest)
	if rec == nil {
		rec = &store.Release{Digest: digest, FirstSeen: now}
	}
	at := spreadAt(rec.FirstSeen, opens, t.s.cfg.Interval, spreadFraction(a.device.ID, digest))
	if !now.Before(at) {
		return nil
	}
	rec.Created, rec.End = created, rollout.End(plan, created)
	rec.Wave, rec.Opens, rec.Verdict = pl.Name, opens, string(rollout.WaitWave)
	a.putRelease(t.name, *rec)
	a.metrics.SetWave(t.name, digest, pl.Name)
	p := &prefetched{digest: digest, mirror: t.rev.Mirror, annotations: t.rev.Annotations, created: t.rev.Created, verified: t.verified}
	if t.rev.Via != nil {
		p.via = *t.rev.Via
	}
	t.s.prefetched = p
	return t.hold(store.WaitWave, fmt.Sprintf("waiting for wave %s (opens %s); downloading it from %s, spread over the time before the wave opens so that the earlier waves get the registry first",
		pl.Name, rollout.FormatTime(opens), rollout.FormatTime(at)), at)
}

// spreads reports whether the attempt may spread its download: an OCI
// source's release verified by a signature, on an automatic poll (not a
// technician's reconcile, a rollback or an explicit digest), and not a
// download the download windows already restrict (it waits for them and
// then takes its first chance).
func (t *attempt) spreads() bool {
	r := t.req
	switch {
	case t.s.file != "", r.force, r.rollback, r.ignoreWindows, r.digest != "", t.revertFrom != "":
		return false
	case t.s.cfg.Windows.Download != nil, t.verified == nil || t.verified.Signature == nil:
		return false
	case t.applied != nil && t.applied.Digest == t.rev.Digest:
		return false
	}
	_, ok := t.rev.Annotations[state.RolloutAnnotation]
	return ok
}

// spreadAt is when a device that first saw a release at seen, and whose
// wave opens at opens, downloads it: frac (in [0, 1), stable per device
// and release) of the way from one interval after seen (the interval the
// waves open at once have to themselves) to the earlier of halfway to
// opens and one interval before opens. A wave that opens within two
// intervals of seen leaves no room to spread: the download is one interval
// before it opens, or at seen when that is earlier.
func spreadAt(seen, opens time.Time, interval time.Duration, frac float64) time.Time {
	hi := seen.Add(opens.Sub(seen) / 2)
	if h := opens.Add(-interval); h.Before(hi) {
		hi = h
	}
	lo := seen.Add(interval)
	switch {
	case !hi.After(seen):
		return seen
	case !lo.Before(hi):
		return hi
	}
	return lo.Add(time.Duration(frac * float64(hi.Sub(lo))))
}

// spreadFraction is the device's place, in [0, 1), in the spread of the
// downloads of the release digest: from SHA-256(id "\n" digest), so that
// it is stable across restarts and differs from one release to the next.
func spreadFraction(id, digest string) float64 {
	sum := sha256.Sum256([]byte(id + "\n" + digest))
	return float64(binary.BigEndian.Uint64(sum[:8])>>11) / (1 << 53)
}
