package cosign

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
)

// Identity is a keyless signer a Policy accepts: the OIDC identity Fulcio
// put in the signing certificate. Both fields are Go regular expressions
// (regexp syntax), both are required, and neither is anchored for you:
// write ^...$ to match the whole value, or "https://github.com/acme/" also
// matches "https://evil.example/?https://github.com/acme/".
type Identity struct {
	// Issuer matches the certificate's OIDC issuer extension, e.g.
	// ^https://token\.actions\.githubusercontent\.com$.
	Issuer string
	// Subject matches the certificate's subject alternative name (e-mail,
	// URI such as a GitHub workflow ref, ...), e.g.
	// ^https://github\.com/acme/fleet/\.github/workflows/push\.yml@refs/heads/main$.
	Subject string
}

// String renders the identity for messages: issuer ~ `re`, subject ~ `re`.
func (id Identity) String() string {
	return fmt.Sprintf("issuer ~ %s, subject ~ %s", quoteRegexp(id.Issuer), quoteRegexp(id.Subject))
}

// quoteRegexp quotes a regular expression without doubling backslashes.
func quoteRegexp(re string) string {
	if strconv.CanBackquote(re) {
		return "`" + re + "`"
	}
	return strconv.Quote(re)
}

// Policy says whose signatures VerifyPolicy accepts: any of Keys, or
// (keyless) any certificate issued by TrustedRoot's certificate authorities
// to one of Identities. At least one of Keys and TrustedRoot is required;
// TrustedRoot and Identities go together.
type Policy struct {
	// Keys are trusted public keys (LoadPublicKeys, ParsePublicKey).
	Keys []Key
	// TrustedRoot is the keyless trust material: Fulcio CA chains, Rekor
	// log keys, timestamp authorities and CT log keys, normally a
	// trusted_root.json read with LoadTrustedRoot. Nil disables keyless.
	TrustedRoot root.TrustedMaterial
	// Identities are the keyless signers accepted; required with
	// TrustedRoot. Any one must match.
	Identities []Identity
	// Limits bound the work a registry can make verification do.
	Limits Limits
}

// Default limits, used for the zero fields of Limits.
const (
	DefaultMaxSignatures = 32
	DefaultMaxReferrers  = 1000
)

// maxSignatureSize bounds one signature read from the registry: a sigstore
// bundle layer, a legacy .sig payload. A key-signed bundle without tlog
// entries is about 1 KiB, a simple-signing payload a few hundred bytes.
const maxSignatureSize = 1 << 20

// Limits bound what VerifyPolicy reads for one digest. A zero field means
// its default.
type Limits struct {
	// MaxSignatures caps the signatures checked (sigstore bundles and
	// legacy .sig layers together); beyond it the search stops, and fails
	// with ErrTooManySignatures unless one of those checked verified.
	// Default DefaultMaxSignatures.
	MaxSignatures int
	// MaxReferrers caps the entries of the referrers index looked at;
	// beyond it the rest are ignored, and the search fails with
	// ErrTooManyReferrers unless a signature verified. Default
	// DefaultMaxReferrers.
	MaxReferrers int
}

func (l Limits) withDefaults() Limits {
	if l.MaxSignatures <= 0 {
		l.MaxSignatures = DefaultMaxSignatures
	}
	if l.MaxReferrers <= 0 {
		l.MaxReferrers = DefaultMaxReferrers
	}
	return l
}

// LoadTrustedRoot reads a sigstore trusted_root.json (media type
// application/vnd.dev.sigstore.trustedroot+json;version=0.1, as served by
// Sigstore's TUF repository or written for a private Sigstore) for
// Policy.TrustedRoot. Nothing is fetched: updating the file is the
// caller's business. It fails unless the root has at least one certificate
// authority and a source of signing time (a transparency log or a
// timestamp authority).
func LoadTrustedRoot(path string) (root.TrustedMaterial, error) {
	tr, err := root.NewTrustedRootFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("loading trusted root %s: %w", path, err)
	}
	if err := checkTrustedMaterial(tr); err != nil {
		return nil, fmt.Errorf("trusted root %s: %w", path, err)
	}
	return tr, nil
}

func checkTrustedMaterial(tm root.TrustedMaterial) error {
	if len(tm.FulcioCertificateAuthorities()) == 0 {
		return errors.New("no certificate authorities: keyless signatures cannot chain to it")
	}
	if len(tm.RekorLogs()) == 0 && len(tm.TimestampingAuthorities()) == 0 {
		return errors.New("neither transparency logs nor timestamp authorities: signing times of short-lived certificates cannot be established")
	}
	return nil
}

// VerifyPolicy checks that digest carries a signature p accepts. Like
// Verify (which is VerifyPolicy with Policy{Keys: keys}) it does not
// resolve tags, searches both storage formats, takes the first signature
// that verifies, and only counts a signature whose signed claim names
// exactly this digest.
//
// Key signatures are verified as Verify describes. A keyless signature is
// accepted when, all offline against p.TrustedRoot:
//
//   - its leaf certificate chains to one of the root's certificate
//     authorities, valid at the signing time;
//   - the signing time is attested: the root's transparency log (if it has
//     any) must hold an entry for the signature, checked through its
//     signed entry timestamp / inclusion proof (a Rekor v1 or v2 log), and
//     at least one observer timestamp (the log's integrated time or an
//     RFC 3161 timestamp from one of the root's TSAs) must verify;
//   - if the root lists CT logs, the certificate carries a valid SCT;
//   - the certificate's issuer and subject match one of p.Identities.
//
// Supported keyless formats: sigstore bundles (v0.3, DSSE over the in-toto
// cosign sign statement: cosign v3 / `cosign sign --new-bundle-format`) and
// legacy cosign v2 .sig signatures carrying the certificate, chain and
// Rekor bundle annotations (verified through cosign's own code; there the
// chain is checked at the certificate's issue time and the Rekor inclusion
// promise, or with a TSA-only root an RFC 3161 timestamp, must cover its
// validity). Legacy keyless signatures without a Rekor bundle annotation
// (which cosign would look up online) are not accepted.
//
// Result.Identity and Result.Issuer tell the keyless signer; Result.Key is
// empty then.
//
// Errors, most specific first: ErrRegistry (nothing verified and the
// registry could not be fully read), ErrDigestMismatch (a signature by a
// trusted key or an allowed keyless identity names another digest),
// ErrIdentityMismatch (a keyless signature is valid under the trusted root
// but its issuer/subject is not allowed), ErrKeyMismatch (signatures exist
// but none verifies with the keys nor chains to the trusted root: unknown
// key, another Sigstore instance, missing tlog entry or SCT, tampering),
// ErrNoSignature. An invalid Policy (no keys nor root, identities missing
// or not compiling, a root without CAs or time source) is a plain error,
// or ErrInvalidKey for an unloaded Key.
func VerifyPolicy(ctx context.Context, digest name.Digest, p Policy, ropts ...remote.Option) (*Result, error) {
	c, err := compilePolicy(p)
	if err != nil {
		return nil, err
	}
	h, err := v1.NewHash(digest.DigestStr())
	if err != nil {
		return nil, fmt.Errorf("verify: %s: %w", digest, err)
	}
	opts := remoteOptions(ctx, ropts)
	f := &findings{}

	if res := verifyBundles(digest, h, c, opts, f); res != nil {
		return res, nil
	}
	if res := verifyLegacy(ctx, digest, h, c, opts, f); res != nil {
		return res, nil
	}
	return nil, f.err(digest, c)
}

// compiled is a validated Policy.
type compiled struct {
	keys   []Key
	kl     *keyless // nil: keys only
	limits Limits
}

// keyless is the keyless half of a compiled Policy.
type keyless struct {
	tm       root.TrustedMaterial
	verifier *verify.Verifier
	ids      verify.CertificateIdentities
	policy   []verify.PolicyOption // WithCertificateIdentity(ids...)
	legacy   []cosign.Identity
	allowed  string // the identities, for messages
}

func compilePolicy(p Policy) (*compiled, error) {
	for _, k := range p.Keys {
		if k.verifier == nil {
			return nil, fmt.Errorf("%w: key %q was not loaded with LoadPublicKeys or ParsePublicKey", ErrInvalidKey, k.Name)
		}
	}
	c := &compiled{keys: p.Keys, limits: p.Limits.withDefaults()}
	switch {
	case p.TrustedRoot == nil && len(p.Identities) > 0:
		return nil, errors.New("verify: keyless identities given without a trusted root")
	case p.TrustedRoot == nil && len(p.Keys) == 0:
		return nil, errors.New("verify: no public keys or trusted root given")
	case p.TrustedRoot == nil:
		return c, nil
	case len(p.Identities) == 0:
		return nil, errors.New("verify: a trusted root needs at least one allowed identity (issuer and subject); without one any certificate from its CA would do")
	}
	if err := checkTrustedMaterial(p.TrustedRoot); err != nil {
		return nil, fmt.Errorf("verify: trusted root: %w", err)
	}
	kl := &keyless{tm: p.TrustedRoot}
	descs := make([]string, 0, len(p.Identities))
	for i, id := range p.Identities {
		if id.Issuer == "" || id.Subject == "" {
			return nil, fmt.Errorf("verify: identity %d (%s): both issuer and subject are required", i+1, id)
		}
		if _, err := regexp.Compile(id.Issuer); err != nil {
			return nil, fmt.Errorf("verify: identity %d: issuer: %w", i+1, err)
		}
		if _, err := regexp.Compile(id.Subject); err != nil {
			return nil, fmt.Errorf("verify: identity %d: subject: %w", i+1, err)
		}
		ci, err := verify.NewShortCertificateIdentity("", id.Issuer, "", id.Subject)
		if err != nil {
			return nil, fmt.Errorf("verify: identity %d: %w", i+1, err)
		}
		kl.ids = append(kl.ids, ci)
		kl.policy = append(kl.policy, verify.WithCertificateIdentity(ci))
		kl.legacy = append(kl.legacy, cosign.Identity{IssuerRegExp: id.Issuer, SubjectRegExp: id.Subject})
		descs = append(descs, "{"+id.String()+"}")
	}
	kl.allowed = strings.Join(descs, ", ")

	// What the trusted root allows: a tlog entry when it has logs, an SCT
	// when it has CT logs, and always a verified signing time.
	vopts := []verify.VerifierOption{verify.WithObserverTimestamps(1)}
	if len(kl.tm.RekorLogs()) > 0 {
		vopts = append(vopts, verify.WithTransparencyLog(1))
	}
	if len(kl.tm.CTLogs()) > 0 {
		vopts = append(vopts, verify.WithSignedCertificateTimestamps(1))
	}
	v, err := verify.NewVerifier(kl.tm, vopts...)
	if err != nil {
		return nil, fmt.Errorf("verify: trusted root: %w", err)
	}
	kl.verifier = v
	c.kl = kl
	return c, nil
}

// describe names what signatures were checked against, for messages.
func (c *compiled) describe() string {
	var parts []string
	if len(c.keys) > 0 {
		parts = append(parts, "verifies with key(s) "+keyNames(c.keys))
	}
	if c.kl != nil {
		parts = append(parts, "chains to the trusted root")
	}
	return strings.Join(parts, " or ")
}
