package cosign

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	intotov1 "github.com/in-toto/attestation/go/v1"
	cbundle "github.com/sigstore/cosign/v2/pkg/cosign/bundle"
	ctypes "github.com/sigstore/cosign/v2/pkg/types"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
	sigopts "github.com/sigstore/sigstore/pkg/signature/options"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// Attestations are signed in-toto statements about an artifact other than
// "this digest is signed": a predicate of a given type (a JSON object)
// whose subject is the artifact's digest. They are stored like FormatBundle
// signatures, as sigstore bundles referring to the artifact (referrers API
// or the sha256-<hex> fallback tag), with the predicate type in the
// dev.sigstore.bundle.predicateType annotation: what `cosign attest
// --new-bundle-format --type TYPE --predicate FILE` writes, which is how
// CI attests keyless. VerifyPolicy ignores them.

// Attest signs an in-toto statement of predicateType whose subject is
// digest and whose predicate is the JSON object predicate, with sv, and
// attaches it to digest. The artifact must exist.
func Attest(ctx context.Context, digest name.Digest, sv signature.SignerVerifier, predicateType string, predicate []byte, ropts ...remote.Option) error {
	if sv == nil {
		return errors.New("attest: no signing key")
	}
	payload, err := StatementPayload(digest, predicateType, predicate)
	if err != nil {
		return err
	}
	envelope, err := dsse.WrapSigner(sv, ctypes.IntotoPayloadType).SignMessage(bytes.NewReader(payload), sigopts.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("attest: %w", err)
	}
	pub, err := sv.PublicKey(sigopts.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("attest: public key: %w", err)
	}
	pubPEM, err := cryptoutils.MarshalPublicKeyToPEM(pub)
	if err != nil {
		return fmt.Errorf("attest: public key: %w", err)
	}
	bundleBytes, err := cbundle.MakeNewBundle(pub, nil, payload, envelope, pubPEM, nil)
	if err != nil {
		return fmt.Errorf("attest: making bundle: %w", err)
	}
	return attach(ctx, digest, bundleBytes, predicateType, "statement", ropts)
}

// AttachAttestation stores a bundle signed elsewhere (such as keyless in
// CI) as a referrer of digest, as Attest stores its own. bundleJSON must be
// a sigstore bundle v0.3 or later whose DSSE envelope carries an in-toto
// statement of predicateType naming digest: a sanity check of unverified
// content; the signature is not verified here.
func AttachAttestation(ctx context.Context, digest name.Digest, bundleJSON []byte, predicateType string, ropts ...remote.Option) error {
	return attach(ctx, digest, bundleJSON, predicateType, "statement", ropts)
}

// StatementPayload is the in-toto statement Attest signs: subject digest,
// predicateType and predicate, which must be a JSON object.
func StatementPayload(digest name.Digest, predicateType string, predicate []byte) ([]byte, error) {
	alg, hexDigest, ok := strings.Cut(digest.DigestStr(), ":")
	if !ok || predicateType == "" {
		return nil, fmt.Errorf("attest: digest %q or predicate type %q", digest.DigestStr(), predicateType)
	}
	pred := &structpb.Struct{}
	if err := protojson.Unmarshal(predicate, pred); err != nil {
		return nil, fmt.Errorf("attest: the predicate is not a JSON object: %w", err)
	}
	payload, err := protojson.Marshal(&intotov1.Statement{
		Type:          intotov1.StatementTypeUri,
		Subject:       []*intotov1.ResourceDescriptor{{Digest: map[string]string{alg: hexDigest}}},
		PredicateType: predicateType,
		Predicate:     pred,
	})
	if err != nil {
		return nil, fmt.Errorf("attest: encoding statement: %w", err)
	}
	return payload, nil
}

// Attestation is a verified attestation.
type Attestation struct {
	// Predicate is the statement's predicate, as signed (JSON).
	Predicate json.RawMessage
	// Key is the Name of the key that verified it; empty when keyless.
	Key string
	// Identity and Issuer are the keyless signer; empty with a key.
	Identity, Issuer string
}

// Signer names who signed, for messages: the key, or the keyless identity.
func (a *Attestation) Signer() string {
	if a.Key != "" {
		return "key " + a.Key
	}
	return fmt.Sprintf("%s (issuer %s)", a.Identity, a.Issuer)
}

// AttestationVerifier checks attestation bundles against a Policy.
type AttestationVerifier struct {
	c *compiled
}

// NewAttestationVerifier compiles p once for many bundles; an invalid
// Policy is an error as for VerifyPolicy.
func NewAttestationVerifier(p Policy) (*AttestationVerifier, error) {
	c, err := compilePolicy(p)
	if err != nil {
		return nil, err
	}
	return &AttestationVerifier{c: c}, nil
}

// Verify checks that bundleJSON, read from the registry, is an in-toto
// statement of predicateType about digest, signed as the Policy accepts
// (any of its keys, or keyless by an allowed identity under the trusted
// root, all offline), and returns its predicate. Errors: ErrDigestMismatch
// (signed as accepted, but about another digest: copied), ErrIdentityMismatch
// (keyless, valid, by someone not allowed), ErrKeyMismatch (no key and no
// trusted root verifies it), or a plain error for a malformed bundle or
// another predicate type.
func (v *AttestationVerifier) Verify(bundleJSON []byte, digest name.Digest, predicateType string) (*Attestation, error) {
	if len(bundleJSON) > maxSignatureSize {
		return nil, fmt.Errorf("bundle is %d bytes (limit %d)", len(bundleJSON), maxSignatureSize)
	}
	b := &sgbundle.Bundle{}
	if err := b.UnmarshalJSON(bundleJSON); err != nil {
		return nil, fmt.Errorf("parsing bundle: %w", err)
	}
	if !b.MinVersion("v0.3") {
		return nil, errors.New("bundle version older than v0.3")
	}
	env := b.GetDsseEnvelope()
	if env == nil || env.GetPayloadType() != ctypes.IntotoPayloadType {
		return nil, errors.New("bundle holds no DSSE in-toto envelope")
	}
	h, err := v1.NewHash(digest.DigestStr())
	if err != nil {
		return nil, fmt.Errorf("digest %s: %w", digest, err)
	}
	want, err := hex.DecodeString(h.Hex)
	if err != nil {
		return nil, fmt.Errorf("digest %s: %w", digest, err)
	}
	var why []string
	for _, k := range v.c.keys {
		_, err := k.verifyBundle(b, verify.WithArtifactDigest(h.Algorithm, want))
		if err == nil {
			return predicateOf(env.GetPayload(), predicateType, &Attestation{Key: k.Name})
		}
		if res, uerr := k.verifyBundle(b, verify.WithoutArtifactUnsafe()); uerr == nil {
			return nil, fmt.Errorf("%w: statement verifies with key %s but names %s, not %s: a statement copied from another artifact is not valid for this one",
				ErrDigestMismatch, k.Name, subjectDigests(res.Statement), digest.DigestStr())
		}
		why = append(why, fmt.Sprintf("key %s: %v", k.Name, err))
	}
	if kl := v.c.kl; kl != nil {
		res, err := kl.verifier.Verify(b, verify.NewPolicy(verify.WithArtifactDigest(h.Algorithm, want), kl.policy...))
		if err == nil && res.Signature != nil && res.Signature.Certificate != nil {
			cert := res.Signature.Certificate
			return predicateOf(env.GetPayload(), predicateType, &Attestation{Identity: cert.SubjectAlternativeName, Issuer: cert.Issuer})
		}
		res, uerr := kl.verifier.Verify(b, verify.NewPolicy(verify.WithoutArtifactUnsafe(), verify.WithoutIdentitiesUnsafe()))
		if uerr == nil && res.Signature != nil && res.Signature.Certificate != nil {
			cert := res.Signature.Certificate
			if _, ierr := kl.ids.Verify(*cert); ierr != nil {
				return nil, fmt.Errorf("%w: statement signed by %s; allowed identities: %s", ErrIdentityMismatch, signer(cert), kl.allowed)
			}
			if !statementNames(res, h) {
				return nil, fmt.Errorf("%w: statement signed by allowed identity %s names %s, not %s: a statement copied from another artifact is not valid for this one",
					ErrDigestMismatch, signer(cert), subjectDigests(res.Statement), digest.DigestStr())
			}
		}
		why = append(why, fmt.Sprintf("trusted root: %v", err))
	}
	return nil, fmt.Errorf("%w: statement about %s: none %s [%s]", ErrKeyMismatch, digest.DigestStr(), v.c.describe(), strings.Join(why, "; "))
}

// predicateOf returns a with the predicate of the verified in-toto
// payload, after checking its predicate type.
func predicateOf(payload []byte, predicateType string, a *Attestation) (*Attestation, error) {
	var st struct {
		PredicateType string          `json:"predicateType"`
		Predicate     json.RawMessage `json:"predicate"`
	}
	if err := json.Unmarshal(payload, &st); err != nil {
		return nil, fmt.Errorf("statement: %w", err)
	}
	if st.PredicateType != predicateType {
		return nil, fmt.Errorf("statement predicate type %q, want %q", st.PredicateType, predicateType)
	}
	a.Predicate = st.Predicate
	return a, nil
}
