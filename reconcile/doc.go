// Package reconcile is the device agent: for every source it resolves a tag,
// digest or semver range to one digest, verifies that digest's signature,
// refuses downgrades, pulls and extracts the artifact beside the current
// revision, switches it in atomically, hands it to the appliers and records
// the outcome. A registry that is down, a 404, a bad signature or a bad
// archive never touches what is applied.
package reconcile
