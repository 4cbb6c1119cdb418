package cosign

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/oci"
	ctypes "github.com/sigstore/cosign/v2/pkg/types"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	"github.com/sigstore/sigstore-go/pkg/verify"
)

// verifyBundle checks a bundle keyless: certificate chain, log entry,
// timestamps and SCT against the trusted root, then identity and statement.
func (kl *keyless) verifyBundle(digest name.Digest, desc v1.Descriptor, b *sgbundle.Bundle, h v1.Hash, want []byte, f *findings) *Result {
	res, err := kl.verifier.Verify(b, verify.NewPolicy(verify.WithArtifactDigest(h.Algorithm, want), kl.policy...))
	if err == nil && res.Signature != nil && res.Signature.Certificate != nil {
		if pt := res.Statement.GetPredicateType(); pt != ctypes.CosignSignPredicateType {
			f.reason("bundle %s: predicate type %q", desc.Digest, pt)
			return nil
		}
		cert := res.Signature.Certificate
		return &Result{Digest: digest, Format: FormatBundle, Identity: cert.SubjectAlternativeName, Issuer: cert.Issuer}
	}
	// Classify: is the signature valid under the trusted root at all, and
	// if so, is it the signer or the statement that is wrong?
	res, uerr := kl.verifier.Verify(b, verify.NewPolicy(verify.WithoutArtifactUnsafe(), verify.WithoutIdentitiesUnsafe()))
	if uerr != nil || res.Signature == nil || res.Signature.Certificate == nil {
		f.reason("bundle %s, trusted root: %v", desc.Digest, err)
		return nil
	}
	cert := res.Signature.Certificate
	if _, ierr := kl.ids.Verify(*cert); ierr != nil {
		f.identityMismatch("bundle %s is signed by %s", desc.Digest, signer(cert))
		return nil
	}
	if !statementNames(res, h) {
		f.mismatch("bundle %s is signed by allowed identity %s but its statement names %s",
			desc.Digest, signer(cert), subjectDigests(res.Statement))
		return nil
	}
	f.reason("bundle %s, trusted root: %v", desc.Digest, err)
	return nil
}

// statementNames reports whether a verified statement has h as a subject.
func statementNames(res *verify.VerificationResult, h v1.Hash) bool {
	for _, s := range res.Statement.GetSubject() {
		if s.GetDigest()[h.Algorithm] == h.Hex {
			return true
		}
	}
	return false
}

// verifyLegacySig checks a legacy .sig signature keyless, through cosign's
// own verifier.
func (kl *keyless) verifyLegacySig(ctx context.Context, digest name.Digest, h v1.Hash, tag name.Tag, i int, sig oci.Signature, f *findings) *Result {
	cert, err := sig.Cert()
	switch {
	case err != nil:
		f.reason("%s signature %d: certificate: %v", tag.TagStr(), i, err)
		return nil
	case cert == nil:
		f.reason("%s signature %d: no certificate (not keyless)", tag.TagStr(), i)
		return nil
	}
	sum, err := certificate.SummarizeCertificate(cert)
	if err != nil {
		f.reason("%s signature %d: certificate: %v", tag.TagStr(), i, err)
		return nil
	}
	if len(kl.tm.RekorLogs()) == 0 {
		// cosign falls back to the current time without a timestamp.
		if ts, err := sig.RFC3161Timestamp(); err != nil || ts == nil {
			f.reason("%s signature %d: no RFC 3161 timestamp, required as the trusted root has no transparency log", tag.TagStr(), i)
			return nil
		}
	}
	co := kl.legacyCheckOpts()
	co.Identities = kl.legacy
	co.ClaimVerifier = cosign.SimpleClaimVerifier
	_, err = cosign.VerifyImageSignature(ctx, sig, h, co)
	if err == nil {
		return &Result{Digest: digest, Format: FormatLegacy, Identity: sum.SubjectAlternativeName, Issuer: sum.Issuer}
	}
	// Classify as for bundles.
	if _, uerr := cosign.VerifyImageSignature(ctx, sig, h, kl.legacyCheckOpts()); uerr != nil {
		f.reason("%s signature %d, trusted root: %v", tag.TagStr(), i, err)
		return nil
	}
	if perr := cosign.CheckCertificatePolicy(cert, &cosign.CheckOpts{Identities: kl.legacy}); perr != nil {
		f.identityMismatch("%s signature %d is signed by %s", tag.TagStr(), i, signer(&sum))
		return nil
	}
	if claimedDigest(sig) != h.String() {
		f.mismatch("%s signature %d is signed by allowed identity %s but claims %s",
			tag.TagStr(), i, signer(&sum), claimedDigest(sig))
		return nil
	}
	f.reason("%s signature %d, trusted root: %v", tag.TagStr(), i, err)
	return nil
}

// legacyCheckOpts is keyless, offline verification of a .sig signature
// against the trusted root, without identity or claim checks. The Rekor
// inclusion promise (bundle annotation) is required when the root has
// logs; for a TSA-only root verifyLegacySig requires an RFC 3161
// timestamp annotation instead.
func (kl *keyless) legacyCheckOpts() *cosign.CheckOpts {
	noTlog := len(kl.tm.RekorLogs()) == 0
	return &cosign.CheckOpts{
		TrustedMaterial:     kl.tm,
		IgnoreSCT:           len(kl.tm.CTLogs()) == 0,
		IgnoreTlog:          noTlog,
		UseSignedTimestamps: noTlog,
		Offline:             true,
	}
}

func signer(c *certificate.Summary) string {
	return fmt.Sprintf("subject %q, issuer %q", c.SubjectAlternativeName, c.Issuer)
}
