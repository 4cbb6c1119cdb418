// Package reconcile is the device agent: for every source it resolves a tag,
// digest or semver range to one digest, verifies that digest's signature,
// refuses downgrades, pulls and extracts the artifact beside the current
// revision, switches it in atomically, hands it to the appliers and records
// the outcome. A registry that is down, a 404, a bad signature or a bad
// archive never touches what is applied.
//
// Every fetch of a source goes through the registry mirrors of the
// configuration (mirrors.go): tags only where tags are trusted, content by
// digest from the first endpoint that serves it, and the endpoint that
// served each fetch recorded for `berth status` and the logs. A file://
// source is a bundle (bundle.go): verified and applied the same way, read
// from the file instead of a registry, its images loaded into the appliers
// that take them.
package reconcile
