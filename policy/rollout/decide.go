package rollout

import (
	"fmt"
	"time"

	"github.com/berth-dev/berth/state"
)

// Action is what a signed statement says about a release (see package
// statement). The zero value is no statement.
type Action string

// The actions of signed statements.
const (
	// None: no valid statement; the plan alone decides.
	None Action = ""
	// Pause: devices not yet on the release do not adopt it; those on it
	// stay.
	Pause Action = "pause"
	// Resume: adoption continues by the plan.
	Resume Action = "resume"
	// Abort: devices on the release go back to the revision they ran
	// before it; the others never adopt it.
	Abort Action = "abort"
)

// ParseAction parses pause, resume or abort.
func ParseAction(s string) (Action, error) {
	switch a := Action(s); a {
	case Pause, Resume, Abort:
		return a, nil
	}
	return None, fmt.Errorf("unknown rollout action %q: use pause, resume or abort", s)
}

// Verdict is what a device does about a release now.
type Verdict string

// The verdicts of Decide.
const (
	// Adopt: switch to the release and apply it now (its wave is open, or
	// it has no plan).
	Adopt Verdict = "adopt"
	// Keep: the device is on the release and stays on it.
	Keep Verdict = "keep"
	// WaitWave: the device's wave is not open yet; prefetch the release
	// and wait until Decision.Opens.
	WaitWave Verdict = "wait-wave"
	// WaitClock: the device's clock is before the release's created time,
	// which cannot be: wait rather than jump ahead, and say so.
	WaitClock Verdict = "wait-clock"
	// Paused: a signed pause holds the adoption.
	Paused Verdict = "paused"
	// Aborted: a signed abort: the release is never adopted.
	Aborted Verdict = "aborted"
	// Revert: the device is on an aborted release: go back to the revision
	// it ran before it. The signed abort naming the release's digest is
	// what authorizes this downgrade.
	Revert Verdict = "revert"
)

// Input is what Decide needs to know about a release and the device.
type Input struct {
	// Plan is the release's rollout plan; nil when it has none.
	Plan *state.Rollout
	// Created is the release's signed created time (its manifest's
	// org.opencontainers.image.created annotation); required with a plan.
	Created time.Time
	// Device is the device's identity.
	Device Device
	// Repository is the repository path of the source, for Bucket.
	Repository string
	// Action is what the newest valid signed statement says; None when
	// there is none or it was not looked up.
	Action Action
	// OnRelease is true when the device already runs the release.
	OnRelease bool
	// Now is the device's clock.
	Now time.Time
}

// Decision is what Decide says.
type Decision struct {
	// Verdict is what to do.
	Verdict Verdict `json:"verdict"`
	// Placement is the device's wave; zero without a plan.
	Placement Placement `json:"placement,omitzero"`
	// Opens is when the device's wave opens; zero without a plan.
	Opens time.Time `json:"opens,omitzero"`
	// Reason says why, for status and logs; empty for Adopt and Keep
	// without a plan.
	Reason string `json:"reason,omitempty"`
}

// Waiting reports whether the verdict holds the release back for now
// (WaitWave, WaitClock or Paused): the device prefetches it and looks
// again at the next poll.
func (d Decision) Waiting() bool {
	switch d.Verdict {
	case WaitWave, WaitClock, Paused:
		return true
	}
	return false
}

// Decide says what the device does about a release at in.Now. A signed
// abort comes first (Revert on the release, else Aborted), then a pause
// (Keep on the release, else Paused); resume and no statement leave it to
// the plan: a device on the release keeps it, a device whose clock is
// before the release's created time waits (WaitClock), a device whose
// wave is not open waits for it (WaitWave), and the others adopt.
//
// A plan with a zero Created is an error wrapping ErrNoCreated: the
// waves cannot open, and the release is not adopted.
func Decide(in Input) (Decision, error) {
	var d Decision
	if in.Plan != nil {
		if in.Created.IsZero() {
			return Decision{}, fmt.Errorf("%w: its manifest needs the org.opencontainers.image.created annotation (berth push sets it)", ErrNoCreated)
		}
		d.Placement = Place(in.Plan, in.Device, in.Repository)
		d.Opens = in.Created.Add(in.Plan.Waves[d.Placement.Wave].After)
	}
	switch {
	case in.Action == Abort && in.OnRelease:
		d.Verdict, d.Reason = Revert, "rollout aborted by a signed statement: going back to the revision before this release"
	case in.Action == Abort:
		d.Verdict, d.Reason = Aborted, "rollout aborted by a signed statement: this release is not adopted"
	case in.OnRelease:
		d.Verdict = Keep
		if in.Action == Pause {
			d.Reason = "rollout paused by a signed statement: devices on the release stay on it"
		}
	case in.Action == Pause:
		d.Verdict, d.Reason = Paused, "rollout paused by a signed statement: waiting for a resume"
	case in.Plan == nil:
		d.Verdict = Adopt
	case in.Now.Before(in.Created):
		d.Verdict = WaitClock
		d.Reason = fmt.Sprintf("waiting: the device clock (%s) is before the release's created time (%s); check its time synchronisation",
			FormatTime(in.Now), FormatTime(in.Created))
	case in.Now.Before(d.Opens):
		d.Verdict = WaitWave
		d.Reason = fmt.Sprintf("waiting for wave %s (opens %s)", d.Placement.Name, FormatTime(d.Opens))
	default:
		d.Verdict = Adopt
		d.Reason = fmt.Sprintf("wave %s is open (since %s)", d.Placement.Name, FormatTime(d.Opens))
	}
	return d, nil
}
