// Package cosign signs berth artifacts and verifies their signatures with
// cosign keys or keyless (Fulcio certificates), offline.
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
// Sign only signs with keys, and no transparency log, TUF root, Fulcio or
// timestamp authority is involved. Verify trusts the public key(s) handed to
// it. VerifyPolicy also accepts keyless signatures (both formats; cosign
// keyless signing, e.g. from CI), checked against a sigstore
// trusted_root.json (LoadTrustedRoot) and a list of allowed signer
// identities (OIDC issuer and subject regexps): certificate chain,
// transparency log entry, timestamps and SCTs as the trusted root
// provides for them, all offline. AttachBundle stores a bundle signed
// elsewhere. In every case the only network peer is the registry, reached
// through the caller's remote.Options; keeping trusted_root.json current
// (e.g. from Sigstore's TUF repository) is the caller's business.
package cosign
