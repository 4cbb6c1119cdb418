package rollout

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/berth-dev/berth/internal/labels"
	"github.com/berth-dev/berth/state"
)

// Device is who a device is, for placement: its id (agent.yaml device.id,
// or derived from /etc/machine-id) and its labels.
type Device struct {
	// ID is stable across restarts and releases.
	ID string `json:"id"`
	// Labels are matched against wave selectors.
	Labels map[string]string `json:"labels,omitempty"`
}

// Bucket returns the hash bucket, 0 to state.Buckets-1, of the device id in
// the repository (its path, such as fleet/line-3, without registry host, so
// that moving to a mirror or another registry keeps every device's place).
// It is the first 8 bytes of SHA-256(repository + "\n" + id), as a
// big-endian unsigned integer, modulo 10000; in a shell:
//
//	h=$(printf '%s\n%s' fleet/line-3 press-07 | sha256sum | cut -c1-16)
//	echo $(( 0x$h % 10000 ))   # bash arithmetic is signed: use the unsigned value
func Bucket(id, repository string) int {
	sum := sha256.Sum256([]byte(repository + "\n" + id))
	return int(binary.BigEndian.Uint64(sum[:8]) % state.Buckets)
}

// Placement is where a device stands in a plan.
type Placement struct {
	// Wave is the index of the device's wave in the plan.
	Wave int `json:"wave"`
	// Name is the wave's name.
	Name string `json:"name"`
	// Bucket is the device's hash bucket (see Bucket).
	Bucket int `json:"bucket"`
	// Selected is true when a selector put the device in the wave, false
	// when its bucket did.
	Selected bool `json:"selected"`
}

// Place returns the wave of dev in plan, for the releases of repository:
// the first wave whose selector matches the device's labels, else the
// first percentage wave whose cumulative percent covers the device's
// bucket. A plan parsed by state.Parse always places every device (its
// last wave covers every bucket); the zero Placement is returned for an
// empty plan.
func Place(plan *state.Rollout, dev Device, repository string) Placement {
	b := Bucket(dev.ID, repository)
	if plan == nil {
		return Placement{Bucket: b}
	}
	for i, w := range plan.Waves {
		if w.Selector != nil && labels.Match(w.Selector, dev.Labels) {
			return Placement{Wave: i, Name: w.Name, Bucket: b, Selected: true}
		}
	}
	for i, w := range plan.Waves {
		if w.Selector == nil && b < w.Bucket() {
			return Placement{Wave: i, Name: w.Name, Bucket: b}
		}
	}
	if n := len(plan.Waves); n > 0 { // not reached with a parsed plan
		return Placement{Wave: n - 1, Name: plan.Waves[n-1].Name, Bucket: b}
	}
	return Placement{Bucket: b}
}

// Opens returns the open time of each wave of plan for a release created
// at created: created plus the wave's after.
func Opens(plan *state.Rollout, created time.Time) []time.Time {
	if plan == nil {
		return nil
	}
	out := make([]time.Time, len(plan.Waves))
	for i, w := range plan.Waves {
		out[i] = created.Add(w.After)
	}
	return out
}

// End returns when the last wave of plan opens for a release created at
// created; created itself without a plan.
func End(plan *state.Rollout, created time.Time) time.Time {
	if plan == nil || len(plan.Waves) == 0 {
		return created
	}
	return created.Add(plan.Waves[len(plan.Waves)-1].After)
}

// Lookups reports whether a device looks for signed statements about a
// release at now: only when the release has a plan, and then from the
// poll it first saw the release (firstSeen) until its last wave has been
// open for one more interval, and at least for one interval after
// firstSeen, so that a device that first sees the release late still
// learns of an abort once. Outside that window a poll of an unchanged
// release costs one request.
func Lookups(plan *state.Rollout, created, firstSeen, now time.Time, interval time.Duration) bool {
	if plan == nil {
		return false
	}
	until := End(plan, created).Add(interval)
	if fs := firstSeen.Add(interval); fs.After(until) {
		until = fs
	}
	return now.Before(until)
}

// FormatTime writes a time for messages: RFC 3339 in UTC, to the second.
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// CreatedAnnotation is the manifest annotation holding a release's created
// time; the release's signature covers the manifest, so it is signed.
const CreatedAnnotation = "org.opencontainers.image.created"

// Created returns the created time of a release from its manifest's
// annotations: an error wrapping ErrNoCreated when it is missing or not
// RFC 3339.
func Created(annotations map[string]string) (time.Time, error) {
	s, ok := annotations[CreatedAnnotation]
	if !ok {
		return time.Time{}, fmt.Errorf("%w: no %s annotation", ErrNoCreated, CreatedAnnotation)
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %s %q is not an RFC 3339 time", ErrNoCreated, CreatedAnnotation, s)
	}
	return t, nil
}
