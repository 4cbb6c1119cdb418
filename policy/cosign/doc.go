// Package cosign signs berth artifacts and verifies their signatures with
// cosign keys, offline.
//
// Signatures are bound to a manifest digest and stored next to the artifact
// in its OCI registry, in the layouts cosign itself uses, so `cosign verify`
// and this package interoperate:
//
//   - FormatBundle: a sigstore bundle v0.3 (DSSE envelope over an in-toto
//     statement whose subject is the digest and whose predicateType is
//     https://sigstore.dev/cosign/sign/v1), attached as an OCI 1.1 referrer
//     of the artifact; registries without the referrers API get the
//     sha256-<hex> referrers fallback tag index instead. This is what
//     cosign v3 and `cosign sign --new-bundle-format` write.
//   - FormatLegacy: cosign's classic simple-signing payload in the
//     sha256-<hex>.sig tag.
//
// No transparency log, TUF root, Fulcio or timestamp authority is involved:
// trust is the public key(s) handed to Verify, and the only network peer is
// the registry, reached through the caller's remote.Options.
package cosign
