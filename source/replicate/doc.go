// Package replicate keeps site registries in sync with upstream
// repositories over the OCI distribution API: `berth mirror`.
//
// A mirror.yaml (see Parse) lists sync jobs. A job copies the tags it
// selects (an explicit list, a semver range, or a filter as in the agent's
// configuration, optionally only the newest N) from an upstream repository
// to one or more target repositories, with everything that hangs off each
// tagged manifest:
//
//   - the whole graph under it: every platform of an index, every layer;
//   - its referrers (cosign v3 sigstore bundles, attestations), found
//     through the referrers API or the sha256-<hex> tag fallback, and
//     written at the target the same way (the fallback index is updated on
//     a registry without the referrers API);
//   - cosign's legacy sha256-<hex>.sig, .att and .sbom tags, copied as
//     tags.
//
// Manifests and blobs are copied byte for byte with oras-go's extended
// copy, so every digest survives: a device pinned to ghcr.io/acme/web@D can
// pull registry.plant.local/acme/web@D. Bytes read from the upstream are
// checked against their digest and size while they stream to the target.
// The tag is written last, once the content and its signatures are there.
//
// # Incremental
//
// A pass resolves each selected tag at the upstream (one HEAD) and at each
// target. A tag that already points at the same digest there, whose
// referrers and legacy signature tags are all present too, is up to date
// and costs nothing more. Otherwise the graph is copied, and oras-go skips
// every blob and manifest the target already has (a HEAD each). Nothing is
// ever deleted from a target: a tag that falls out of the selection (an
// older release after `latest: 3`) stays, because devices may still run
// it by digest.
//
// # Routes
//
// Without repositories:, a job's source is a repository and its targets
// are repositories: the source is copied to each target. With
// repositories:, the source and the targets are registry hosts or
// host/path prefixes, exactly like an agent's registries: entry (source
// and mirrors), and each listed path P is copied from source/P to
// target/P. A target may be the source of another job: a site's replica
// registries are kept in sync by chaining jobs (upstream → A, A → B), and
// a pass runs each job after the jobs that feed its source. Cycles are
// refused.
//
// # Failures
//
// An upstream that cannot be read (down, refusing credentials, repository
// gone) fails its job with a clear error and leaves every target as it
// was; the other jobs go on. A tag that fails to copy fails alone.
package replicate
