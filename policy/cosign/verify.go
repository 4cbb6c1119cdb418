package cosign

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	intotov1 "github.com/in-toto/attestation/go/v1"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/oci"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	ocistatic "github.com/sigstore/cosign/v2/pkg/oci/static"
	ctypes "github.com/sigstore/cosign/v2/pkg/types"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	sigPayload "github.com/sigstore/sigstore/pkg/signature/payload"
)

// maxBundleSize bounds the bundle layer read from the registry. A key-signed
// bundle without tlog entries is about 1 KiB.
const maxBundleSize = 1 << 20

// maxReasons bounds the per-signature details quoted in an error.
const maxReasons = 5

// Result describes the signature that satisfied Verify or VerifyPolicy.
type Result struct {
	// Digest is the verified manifest digest.
	Digest name.Digest
	// Format is where the accepted signature was stored.
	Format Format
	// Key is the Name of the key that verified it; empty for a keyless
	// signature.
	Key string
	// Identity is the keyless signer: the certificate's subject
	// alternative name that matched a Policy Identity (e-mail, workflow
	// URI, ...). Empty for a key signature.
	Identity string
	// Issuer is the keyless signer's OIDC issuer (certificate extension).
	// Empty for a key signature.
	Issuer string
}

// Verify checks that digest carries a signature made by one of keys. It is
// VerifyPolicy(ctx, digest, Policy{Keys: keys}, ropts...). It does not
// resolve tags: the caller resolves the reference once and passes the
// digest it is about to use.
//
// Both storage formats are searched: sigstore bundles among the digest's
// referrers (referrers API, or the sha256-<hex> fallback tag index on
// registries without it) and the legacy sha256-<hex>.sig tag. The first
// signature that verifies with any key wins, so several keys may be given
// during a key rotation. A signature only counts if its signed claim names
// exactly this digest (simple-signing docker-manifest-digest, or the in-toto
// statement subject with the cosign sign predicate type).
//
// Key verification is offline and trusts the key alone: no transparency
// log, TUF or certificate checks (VerifyPolicy adds keyless signatures).
//
// Errors: ErrNoSignature, ErrKeyMismatch, ErrDigestMismatch, or ErrRegistry
// when the registry could not be read and nothing verified.
func Verify(ctx context.Context, digest name.Digest, keys []Key, ropts ...remote.Option) (*Result, error) {
	if len(keys) == 0 {
		return nil, errors.New("verify: no public keys given")
	}
	return VerifyPolicy(ctx, digest, Policy{Keys: keys}, ropts...)
}

// findings accumulates what VerifyPolicy saw, to classify a failure.
type findings struct {
	bundles, legacy int      // signature candidates found
	mismatched      int      // trusted signatures naming another digest
	mismatches      []string // ... described (at most maxReasons)
	idMismatched    int      // keyless signatures valid under the root by another identity
	idMismatches    []string // ... described (at most maxReasons)
	reasons         []string // why candidates failed (at most maxReasons)
	registry        []error  // registry failures
}

func (f *findings) reason(format string, args ...any) {
	if len(f.reasons) < maxReasons {
		f.reasons = append(f.reasons, fmt.Sprintf(format, args...))
	}
}

func (f *findings) mismatch(format string, args ...any) {
	f.mismatched++
	if len(f.mismatches) < maxReasons {
		f.mismatches = append(f.mismatches, fmt.Sprintf(format, args...))
	}
}

func (f *findings) identityMismatch(format string, args ...any) {
	f.idMismatched++
	if len(f.idMismatches) < maxReasons {
		f.idMismatches = append(f.idMismatches, fmt.Sprintf(format, args...))
	}
}

// more says how many items a capped list left out.
func more(n int, shown []string) string {
	if n > len(shown) {
		return fmt.Sprintf(" (and %d more)", n-len(shown))
	}
	return ""
}

func (f *findings) err(digest name.Digest, c *compiled) error {
	switch {
	case len(f.registry) > 0:
		// A signature may hide behind the failure: do not claim "unsigned".
		return fmt.Errorf("%w: cannot check signatures of %s (%d bundle(s) and %d .sig signature(s) seen, none verified): %w",
			ErrRegistry, digest, f.bundles, f.legacy, joinedError(f.registry))
	case f.mismatched > 0:
		return fmt.Errorf("%w: %s: %s%s; a signature copied from another artifact is not valid for this one",
			ErrDigestMismatch, digest, strings.Join(f.mismatches, "; "), more(f.mismatched, f.mismatches))
	case f.idMismatched > 0:
		return fmt.Errorf("%w: %s: %s%s; allowed identities: %s",
			ErrIdentityMismatch, digest, strings.Join(f.idMismatches, "; "), more(f.idMismatched, f.idMismatches), c.kl.allowed)
	case f.bundles+f.legacy > 0:
		msg := fmt.Sprintf("%s: %d signature(s) found (%d bundle, %d .sig) but none %s",
			digest, f.bundles+f.legacy, f.bundles, f.legacy, c.describe())
		if len(f.reasons) > 0 {
			msg += " [" + strings.Join(f.reasons, "; ") + "]"
		}
		return fmt.Errorf("%w: %s", ErrKeyMismatch, msg)
	default:
		return fmt.Errorf("%w for %s (looked for referrers bundles and the .sig tag): sign it with `berth sign` or check the reference",
			ErrNoSignature, digest)
	}
}

// joinedError is errors.Join on one line.
type joinedError []error

var _ error = (*joinedError)(nil)

func (e joinedError) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e joinedError) Unwrap() []error { return e }

// verifyBundles checks sigstore bundles attached as referrers of digest.
func verifyBundles(digest name.Digest, h v1.Hash, c *compiled, opts []remote.Option, f *findings) *Result {
	idx, err := remote.Referrers(digest, opts...)
	if err != nil {
		f.registry = append(f.registry, fmt.Errorf("listing referrers of %s: %w", digest, err))
		return nil
	}
	im, err := idx.IndexManifest()
	if err != nil {
		f.registry = append(f.registry, fmt.Errorf("listing referrers of %s: %w", digest, err))
		return nil
	}
	want, err := hex.DecodeString(h.Hex)
	if err != nil {
		f.reason("digest %s: %v", h, err)
		return nil
	}
	for _, desc := range im.Manifests {
		if !maybeBundle(desc) {
			continue
		}
		b, err := fetchBundle(digest, desc, opts)
		var notBundle errNotBundle
		switch {
		case errors.As(err, &notBundle):
			continue
		case errors.As(err, new(ioError)):
			f.registry = append(f.registry, err)
			continue
		case err != nil:
			f.bundles++
			f.reason("bundle %s: %v", desc.Digest, err)
			continue
		}
		if !isSignStatement(b) {
			continue // another attestation (SLSA, SBOM, ...) stored as a bundle
		}
		f.bundles++
		if res := c.verifyBundle(digest, desc, b, h, want, f); res != nil {
			return res
		}
	}
	return nil
}

// verifyBundle checks one signature bundle against the keys, then keyless.
func (c *compiled) verifyBundle(digest name.Digest, desc v1.Descriptor, b *sgbundle.Bundle, h v1.Hash, want []byte, f *findings) *Result {
	for _, k := range c.keys {
		res, err := k.verifyBundle(b, verify.WithArtifactDigest(h.Algorithm, want))
		if err == nil {
			if pt := res.Statement.GetPredicateType(); pt != ctypes.CosignSignPredicateType {
				f.reason("bundle %s: predicate type %q", desc.Digest, pt)
				continue
			}
			return &Result{Digest: digest, Format: FormatBundle, Key: k.Name}
		}
		// Valid signature over a statement about something else?
		if res, uerr := k.verifyBundle(b, verify.WithoutArtifactUnsafe()); uerr == nil {
			f.mismatch("bundle %s verifies with key %s but its statement names %s",
				desc.Digest, k.Name, subjectDigests(res.Statement))
			continue
		}
		f.reason("bundle %s, key %s: %v", desc.Digest, k.Name, err)
	}
	if c.kl != nil {
		return c.kl.verifyBundle(digest, desc, b, h, want, f)
	}
	return nil
}

// verifyBundle verifies a key-signed bundle without tlog or timestamps, as
// cosign does for `verify --key --new-bundle-format --insecure-ignore-tlog`.
func (k Key) verifyBundle(b *sgbundle.Bundle, artifact verify.ArtifactPolicyOption) (*verify.VerificationResult, error) {
	key := root.NewExpiringKey(k.verifier, time.Time{}, time.Time{})
	tm := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) {
		return key, nil
	})
	v, err := verify.NewVerifier(tm, verify.WithNoObserverTimestamps())
	if err != nil {
		return nil, err
	}
	return v.Verify(b, verify.NewPolicy(artifact, verify.WithKey()))
}

// maybeBundle filters referrer descriptors cheaply. Registries report the
// manifest's artifactType, or its config media type (the empty config for
// cosign bundles), or nothing; anything else (cosign .sig/.att referrers,
// SBOMs, ...) is not a bundle.
func maybeBundle(desc v1.Descriptor) bool {
	if pt, ok := desc.Annotations[bundleAnnotationPredicate]; ok && pt != ctypes.CosignSignPredicateType {
		return false
	}
	switch at := desc.ArtifactType; {
	case at == "", at == emptyConfigMediaType, strings.HasPrefix(at, bundleMediaTypePrefix):
		return true
	default:
		return false
	}
}

// errNotBundle marks a referrer that is not a cosign signature bundle.
type errNotBundle struct{ why string }

var _ error = (*errNotBundle)(nil)

func (e errNotBundle) Error() string { return "not a signature bundle: " + e.why }

// ioError marks a registry I/O failure while fetching a bundle, as opposed
// to malformed content.
type ioError struct {
	what string
	err  error
}

var _ error = (*ioError)(nil)

func (e ioError) Error() string { return e.what + ": " + e.err.Error() }
func (e ioError) Unwrap() error { return e.err }

// fetchBundle fetches the referrer manifest and its bundle layer. Registry
// I/O failures are ioError; errNotBundle marks other referrers; other errors
// are malformed content.
func fetchBundle(digest name.Digest, desc v1.Descriptor, opts []remote.Option) (*sgbundle.Bundle, error) {
	repo := digest.Context()
	ref := repo.Digest(desc.Digest.String())
	got, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, ioError{"fetching referrer " + ref.String(), err}
	}
	ld, err := bundleLayer(got.MediaType, got.Manifest)
	if err != nil {
		return nil, err
	}
	blob := repo.Digest(ld.Digest.String())
	layer, err := remote.Layer(blob, opts...)
	if err != nil {
		return nil, ioError{"fetching bundle " + blob.String(), err}
	}
	rc, err := layer.Compressed() // the blob as stored; digest-checked at EOF
	if err != nil {
		return nil, ioError{"fetching bundle " + blob.String(), err}
	}
	defer rc.Close()
	raw, err := io.ReadAll(io.LimitReader(rc, maxBundleSize+1))
	if err != nil {
		return nil, ioError{"reading bundle " + blob.String(), err}
	}
	if len(raw) > maxBundleSize {
		return nil, fmt.Errorf("bundle layer exceeds %d bytes", maxBundleSize)
	}
	return parseBundle(raw)
}

// bundleLayer returns the bundle layer of a referrer manifest of media
// type mt. errNotBundle marks other referrers; other errors are malformed
// content.
func bundleLayer(mt types.MediaType, raw []byte) (v1.Descriptor, error) {
	if mt != types.OCIManifestSchema1 {
		return v1.Descriptor{}, errNotBundle{"media type " + string(mt)}
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return v1.Descriptor{}, fmt.Errorf("decoding manifest: %w", err)
	}
	if len(m.Layers) != 1 || !strings.HasPrefix(string(m.Layers[0].MediaType), bundleMediaTypePrefix) {
		return v1.Descriptor{}, errNotBundle{"no single bundle layer"}
	}
	if pt, ok := m.Annotations[bundleAnnotationPredicate]; ok && pt != ctypes.CosignSignPredicateType {
		return v1.Descriptor{}, errNotBundle{"predicate type " + pt}
	}
	ld := m.Layers[0]
	if ld.Size > maxBundleSize {
		return v1.Descriptor{}, fmt.Errorf("bundle layer is %d bytes (limit %d)", ld.Size, maxBundleSize)
	}
	return ld, nil
}

// parseBundle decodes a sigstore bundle of version v0.3 or later.
func parseBundle(raw []byte) (*sgbundle.Bundle, error) {
	b := &sgbundle.Bundle{}
	if err := b.UnmarshalJSON(raw); err != nil {
		return nil, fmt.Errorf("parsing bundle: %w", err)
	}
	if !b.MinVersion("v0.3") {
		return nil, fmt.Errorf("bundle version too old")
	}
	return b, nil
}

// isSignStatement peeks (unverified) at the DSSE statement type, only to
// tell signatures from other attestations; acceptance rests on the
// verified statement.
func isSignStatement(b *sgbundle.Bundle) bool {
	env := b.GetDsseEnvelope()
	if env == nil || env.GetPayloadType() != ctypes.IntotoPayloadType {
		return false
	}
	var st struct {
		PredicateType string `json:"predicateType"`
	}
	if err := json.Unmarshal(env.GetPayload(), &st); err != nil {
		return true // malformed: let verification report it
	}
	return st.PredicateType == ctypes.CosignSignPredicateType
}

func subjectDigests(st *intotov1.Statement) string {
	var out []string
	for _, s := range st.GetSubject() {
		for alg, d := range s.GetDigest() {
			out = append(out, alg+":"+d)
		}
	}
	if len(out) == 0 {
		return "no digest"
	}
	return strings.Join(out, ", ")
}

// verifyLegacy checks the simple-signing signatures in the .sig tag.
func verifyLegacy(ctx context.Context, digest name.Digest, h v1.Hash, c *compiled, opts []remote.Option, f *findings) *Result {
	oopts := ociOptions(opts)
	tag, err := ociremote.SignatureTag(digest, oopts...)
	if err != nil {
		f.registry = append(f.registry, fmt.Errorf("signature tag of %s: %w", digest, err))
		return nil
	}
	sigs, err := ociremote.Signatures(tag, oopts...) // 404: empty
	if err != nil {
		f.registry = append(f.registry, fmt.Errorf("reading %s: %w", tag, err))
		return nil
	}
	list, err := sigs.Get()
	if err != nil {
		f.registry = append(f.registry, fmt.Errorf("reading %s: %w", tag, err))
		return nil
	}
	for i, s := range list {
		sig, err := ocistatic.Copy(s) // fetch the payload once
		if err != nil {
			f.registry = append(f.registry, fmt.Errorf("reading %s layer %d: %w", tag, i, err))
			continue
		}
		f.legacy++
		if res := c.verifyLegacySig(ctx, digest, h, tag, i, sig, f); res != nil {
			return res
		}
	}
	return nil
}

// verifyLegacySig checks one .sig signature against the keys, then
// keyless.
func (c *compiled) verifyLegacySig(ctx context.Context, digest name.Digest, h v1.Hash, tag name.Tag, i int, sig oci.Signature, f *findings) *Result {
	for _, k := range c.keys {
		co := legacyCheckOpts(k)
		co.ClaimVerifier = cosign.SimpleClaimVerifier
		_, err := cosign.VerifyImageSignature(ctx, sig, h, co)
		if err == nil {
			return &Result{Digest: digest, Format: FormatLegacy, Key: k.Name}
		}
		// Valid signature over a claim about something else?
		if _, uerr := cosign.VerifyImageSignature(ctx, sig, h, legacyCheckOpts(k)); uerr == nil {
			f.mismatch("%s signature %d verifies with key %s but claims %s",
				tag.TagStr(), i, k.Name, claimedDigest(sig))
			continue
		}
		f.reason("%s signature %d, key %s: %v", tag.TagStr(), i, k.Name, err)
	}
	if c.kl != nil {
		return c.kl.verifyLegacySig(ctx, digest, h, tag, i, sig, f)
	}
	return nil
}

// legacyCheckOpts is key-only, offline verification: no tlog, no SCT.
func legacyCheckOpts(k Key) *cosign.CheckOpts {
	return &cosign.CheckOpts{
		SigVerifier: k.verifier,
		IgnoreTlog:  true,
		IgnoreSCT:   true,
		Offline:     true,
	}
}

func claimedDigest(sig oci.Signature) string {
	p, err := sig.Payload()
	if err != nil {
		return "an unreadable payload"
	}
	var ss sigPayload.SimpleContainerImage
	if err := json.Unmarshal(p, &ss); err != nil || ss.Critical.Image.DockerManifestDigest == "" {
		return "no digest"
	}
	return ss.Critical.Image.DockerManifestDigest
}
