package cosign

import (
	"errors"

	"github.com/berth-dev/berth/internal/errdef"
)

// Sentinel errors returned (wrapped, with the reference and details) by this
// package. Branch on them with errors.Is; the wrapped message is meant for
// humans.
var (
	// ErrNoSignature means the registry answered but no signature exists for
	// the digest: neither a sigstore bundle referrer (referrers API or the
	// sha256-<hex> referrers fallback tag) nor a legacy sha256-<hex>.sig tag.
	ErrNoSignature = errors.New("no signature found")

	// ErrKeyMismatch means signatures exist for the digest but none of them
	// verifies with any of the given public keys (unknown signer, rotated key
	// not configured, or a corrupt/forged signature) nor, with a keyless
	// Policy, is valid under the trusted root: a certificate from another
	// CA / Sigstore instance, no acceptable transparency log entry, SCT or
	// timestamp. This is "untrusted signer", keyed or keyless.
	ErrKeyMismatch = errors.New("no signature verifies with the given key(s)")

	// ErrIdentityMismatch means a keyless signature is valid and chains to
	// the trusted root (log entry, timestamps and all) but its certificate's
	// issuer/subject matches none of the Policy's identities: signed by
	// someone else with a legitimate certificate. The message says which
	// subject and issuer were found and which were allowed.
	ErrIdentityMismatch = errors.New("signature identity not allowed")

	// ErrDigestMismatch means a signature verifies with a trusted key, or is
	// keyless by an allowed identity, but its signed claim names another
	// digest: the signature was copied from another artifact (or the
	// artifact was swapped under its signatures).
	ErrDigestMismatch = errors.New("signature names a different digest")

	// ErrInvalidKey means a key could not be used: not PEM, unsupported key
	// type, or a private key that cannot be decrypted (wrong password).
	ErrInvalidKey = errors.New("invalid key")

	// ErrRegistry wraps registry I/O failures (unreachable, 401/403, 5xx,
	// missing artifact, malformed responses). It is never used for
	// "unsigned": when Verify returns it, the signature state is unknown.
	// The underlying error (e.g. *transport.Error) stays reachable with
	// errors.As.
	ErrRegistry = errors.New("registry error")

	// ErrTooManySignatures means more signatures are stored for the digest
	// than Limits.MaxSignatures allows checking, and none of those checked
	// verifies. It is a refusal (errdef.ErrRefused): a registry piling up
	// bogus signatures cannot make the device work without bound.
	ErrTooManySignatures = errdef.Refusal("too many signatures")

	// ErrTooManyReferrers means the digest's referrers index lists more
	// entries than Limits.MaxReferrers, or is larger than the registry
	// client's cap for indexes, and none of the signatures checked
	// verifies. It is a refusal (errdef.ErrRefused).
	ErrTooManyReferrers = errdef.Refusal("referrers index over its cap")
)
