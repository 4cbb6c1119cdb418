package store

import (
	"slices"
	"time"
)

// WaitReason says what holds a release back (SourceState.Waiting).
type WaitReason string

// The reasons a release waits.
const (
	// WaitWave: the device's wave of the release's rollout plan is not
	// open yet.
	WaitWave WaitReason = "wave"
	// WaitClock: the device's clock is before the release's created time.
	WaitClock WaitReason = "clock"
	// WaitPaused: a signed pause statement holds the release.
	WaitPaused WaitReason = "paused"
	// WaitWindow: outside the source's apply window.
	WaitWindow WaitReason = "window"
	// WaitDownload: outside the source's download window; the release is
	// not downloaded yet.
	WaitDownload WaitReason = "download-window"
	// WaitInhibitor: an app of the new or the current revision inhibits
	// the update.
	WaitInhibitor WaitReason = "inhibitor"
	// WaitStatements: the release's signed statements could not be read,
	// so it is not adopted until they can.
	WaitStatements WaitReason = "statements"
)

// Waiting is a release held back: verified and prefetched (unless Reason
// is WaitDownload), not switched in or applied.
type Waiting struct {
	// Digest is the release held back.
	Digest string `json:"digest"`
	// Reason is what holds it.
	Reason WaitReason `json:"reason"`
	// Message says it for people: "waiting for wave early (opens
	// 2026-12-08T10:00:00Z)".
	Message string `json:"message"`
	// Until is when the wait is expected to end (a wave or a window opens,
	// an inhibitor expires); zero when unknown (a pause, a wrong clock).
	Until time.Time `json:"until,omitzero"`
	// Since is when the release first waited for this reason.
	Since time.Time `json:"since"`
}

// Statement is a signed rollout statement the agent read and honours.
type Statement struct {
	// Action is pause, resume or abort.
	Action string `json:"action"`
	// SignedAt is the statement's signed time.
	SignedAt time.Time `json:"signedAt"`
	// Signer is who signed it (a key, a keyless identity).
	Signer string `json:"signer"`
	// Reason is the statement's reason, if any.
	Reason string `json:"reason,omitempty"`
}

// Release is what the agent knows of a release it has seen that carries
// a rollout plan: where the device stands in it, and what the signed
// statements said when last read. It is kept in state.json so that the
// verdict survives the end of statement look-ups and restarts.
type Release struct {
	// Digest is the release's manifest digest.
	Digest string `json:"digest"`
	// FirstSeen is when the device first saw the release.
	FirstSeen time.Time `json:"firstSeen"`
	// Created is the release's signed created time.
	Created time.Time `json:"created,omitzero"`
	// Wave is the device's wave in the release's plan, and Opens when it
	// opens.
	Wave  string    `json:"wave,omitempty"`
	Opens time.Time `json:"opens,omitzero"`
	// End is when the plan's last wave opens.
	End time.Time `json:"end,omitzero"`
	// Verdict is what the device decided last (adopt, keep, wait-wave,
	// wait-clock, paused, aborted, revert).
	Verdict string `json:"verdict,omitempty"`
	// Action is the action of the newest valid statement read last
	// (pause, resume, abort); empty when none. It is what the device goes
	// by once it no longer looks statements up.
	Action string `json:"action,omitempty"`
	// Statement is that newest valid statement.
	Statement *Statement `json:"statement,omitempty"`
	// Ignored counts the statements ignored at the last look-up
	// (unsigned, untrusted, copied from another release, malformed), and
	// IgnoredReason says why the first of them was.
	Ignored       int    `json:"ignored,omitempty"`
	IgnoredReason string `json:"ignoredReason,omitempty"`
	// LookedUp is when statements were last read.
	LookedUp time.Time `json:"lookedUp,omitzero"`
	// Previous is the digest that was applied when the device adopted the
	// release: where a signed abort takes it back to.
	Previous string `json:"previous,omitempty"`
}

// MaxReleases bounds SourceState.Releases.
const MaxReleases = 8

// Release returns the record of digest, nil when there is none.
func (ss *SourceState) Release(digest string) *Release {
	for i := range ss.Releases {
		if ss.Releases[i].Digest == digest {
			return &ss.Releases[i]
		}
	}
	return nil
}

// PutRelease stores r: in place of the record of its digest, else first
// (records are kept newest first by when they were first seen). The
// oldest records beyond MaxReleases are dropped, except those of the
// digests in keep (the applied release, the one waiting).
func (ss *SourceState) PutRelease(r Release, keep ...string) {
	if old := ss.Release(r.Digest); old != nil {
		*old = r
		return
	}
	ss.Releases = append([]Release{r}, ss.Releases...)
	for i := len(ss.Releases) - 1; i >= 0 && len(ss.Releases) > MaxReleases; i-- {
		if !slices.Contains(keep, ss.Releases[i].Digest) {
			ss.Releases = slices.Delete(ss.Releases, i, i+1)
		}
	}
}
