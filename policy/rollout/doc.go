// Package rollout decides, on each device, when the device adopts a
// release that carries a rollout plan (state.Rollout, signed with the
// release), without any fleet server:
//
//   - Place puts the device in a wave: the first whose selector matches
//     its labels, else the first percentage wave whose cumulative percent
//     covers its hash bucket. The bucket (0 to 9999) is a stable hash of
//     the device id and the repository (Bucket), so the same devices go
//     first at every release of a repository.
//   - Opens gives each wave's open time: the release's signed created time
//     plus the wave's after.
//   - Decide says what the device does now: adopt the release, wait for
//     its wave (until when), wait because its clock is before the
//     release's created time, or obey a signed statement (pause, resume,
//     abort; see package statement).
//   - Lookups says whether the device looks for statements at all: only
//     while the release is in its rollout, so that an unchanged poll stays
//     one request in steady state.
//
// Every function is pure: the clock is a parameter.
package rollout
