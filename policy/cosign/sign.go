package cosign

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	intotov1 "github.com/in-toto/attestation/go/v1"
	cbundle "github.com/sigstore/cosign/v2/pkg/cosign/bundle"
	cremote "github.com/sigstore/cosign/v2/pkg/cosign/remote"
	"github.com/sigstore/cosign/v2/pkg/oci"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	ocistatic "github.com/sigstore/cosign/v2/pkg/oci/static"
	ctypes "github.com/sigstore/cosign/v2/pkg/types"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
	sigopts "github.com/sigstore/sigstore/pkg/signature/options"
	sigPayload "github.com/sigstore/sigstore/pkg/signature/payload"
	"google.golang.org/protobuf/encoding/protojson"
)

// Format selects how a signature is stored in the registry.
type Format int

const (
	// FormatBundle is a sigstore bundle v0.3 attached as an OCI referrer
	// (cosign v3 / `cosign sign --new-bundle-format`). The default.
	FormatBundle Format = iota
	// FormatLegacy is cosign's classic sha256-<hex>.sig tag holding
	// simple-signing payload layers (cosign v2 default).
	FormatLegacy
)

var _ fmt.Stringer = (*Format)(nil)

// String returns "bundle" or "legacy".
func (f Format) String() string {
	switch f {
	case FormatBundle:
		return "bundle"
	case FormatLegacy:
		return "legacy"
	default:
		return fmt.Sprintf("Format(%d)", int(f))
	}
}

// ParseFormat parses "bundle" or "legacy" (as printed by Format.String).
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "bundle", "":
		return FormatBundle, nil
	case "legacy":
		return FormatLegacy, nil
	default:
		return 0, fmt.Errorf("unknown signature format %q (want bundle or legacy)", s)
	}
}

const (
	// bundleAnnotationContent and bundleAnnotationPredicate are the
	// annotations cosign puts on bundle referrer manifests.
	bundleAnnotationContent   = "dev.sigstore.bundle.content"
	bundleAnnotationPredicate = "dev.sigstore.bundle.predicateType"
	bundleMediaTypePrefix     = "application/vnd.dev.sigstore.bundle"
	emptyConfigMediaType      = "application/vnd.oci.empty.v1+json"
)

// bundleMediaType is the v0.3 bundle media type, used as the referrer's
// artifactType and its layer media type.
var bundleMediaType = func() string {
	mt, err := sgbundle.MediaTypeString("0.3")
	if err != nil {
		panic(err) // constant input
	}
	return mt
}()

// Sign signs the manifest digest with sv and stores the signature in the
// artifact's repository in the given format. The artifact must exist.
// ropts carry auth, transport, etc.; the registry scheme (e.g. name.Insecure)
// comes from digest itself. Nothing is sent to a transparency log.
func Sign(ctx context.Context, digest name.Digest, sv signature.SignerVerifier, format Format, ropts ...remote.Option) error {
	if sv == nil {
		return errors.New("sign: no signing key")
	}
	opts := remoteOptions(ctx, ropts)
	desc, err := remote.Head(digest, opts...)
	if err != nil {
		return registryErr(fmt.Sprintf("looking up %s to sign it", digest), err)
	}
	switch format {
	case FormatBundle:
		return signBundle(ctx, digest, desc, sv, opts)
	case FormatLegacy:
		return signLegacy(ctx, digest, sv, opts)
	default:
		return fmt.Errorf("sign: unknown format %v", format)
	}
}

// AttachBundle stores a sigstore bundle made elsewhere as a referrer of
// digest, exactly where and how Sign(FormatBundle) stores its own: for
// instance a keyless bundle from `cosign sign --new-bundle-format` in CI,
// which VerifyPolicy then checks against a trusted root. The artifact must
// exist.
//
// bundleJSON must be a sigstore bundle v0.3 or later whose DSSE envelope
// carries an in-toto statement with the cosign sign predicate type naming
// digest. That is only a sanity check of the unverified content: the
// signature itself is not verified here.
func AttachBundle(ctx context.Context, digest name.Digest, bundleJSON []byte, ropts ...remote.Option) error {
	return attach(ctx, digest, bundleJSON, ctypes.CosignSignPredicateType, "signature", ropts)
}

// attach checks that bundleJSON holds a DSSE in-toto statement of
// predicateType naming digest, and stores it as a referrer of digest;
// what names the bundle in messages.
func attach(ctx context.Context, digest name.Digest, bundleJSON []byte, predicateType, what string, ropts []remote.Option) error {
	if len(bundleJSON) > maxSignatureSize {
		return fmt.Errorf("attach: bundle is %d bytes (limit %d)", len(bundleJSON), maxSignatureSize)
	}
	b := &sgbundle.Bundle{}
	if err := b.UnmarshalJSON(bundleJSON); err != nil {
		return fmt.Errorf("attach: parsing bundle: %w", err)
	}
	if !b.MinVersion("v0.3") {
		return errors.New("attach: bundle version older than v0.3")
	}
	env := b.GetDsseEnvelope()
	if env == nil || env.GetPayloadType() != ctypes.IntotoPayloadType {
		return errors.New("attach: bundle holds no DSSE in-toto envelope")
	}
	var st intotov1.Statement
	if err := protojson.Unmarshal(env.GetPayload(), &st); err != nil {
		return fmt.Errorf("attach: bundle statement: %w", err)
	}
	if pt := st.GetPredicateType(); pt != predicateType {
		return fmt.Errorf("attach: bundle predicate type %q, want %q", pt, predicateType)
	}
	alg, hexDigest, _ := strings.Cut(digest.DigestStr(), ":")
	named := false
	for _, s := range st.GetSubject() {
		named = named || s.GetDigest()[alg] == hexDigest
	}
	if !named {
		return fmt.Errorf("attach: bundle statement names %s, not %s", subjectDigests(&st), digest.DigestStr())
	}
	opts := remoteOptions(ctx, ropts)
	desc, err := remote.Head(digest, opts...)
	if err != nil {
		return registryErr(fmt.Sprintf("looking up %s to attach a %s", digest, what), err)
	}
	if err := writeBundleReferrer(digest, desc, bundleJSON, predicateType, opts); err != nil {
		return registryErr(fmt.Sprintf("attaching %s bundle to %s", what, digest), err)
	}
	return nil
}

// signBundle follows cosign's signDigestBundle (cmd/cosign/cli/sign) for a
// key without tlog upload or timestamp.
func signBundle(ctx context.Context, digest name.Digest, subject *v1.Descriptor, sv signature.SignerVerifier, opts []remote.Option) error {
	alg, hexDigest, ok := strings.Cut(digest.DigestStr(), ":")
	if !ok {
		return fmt.Errorf("sign: unable to parse digest %s", digest.DigestStr())
	}
	statement := &intotov1.Statement{
		Type:          intotov1.StatementTypeUri,
		Subject:       []*intotov1.ResourceDescriptor{{Digest: map[string]string{alg: hexDigest}}},
		PredicateType: ctypes.CosignSignPredicateType,
	}
	payload, err := protojson.Marshal(statement)
	if err != nil {
		return fmt.Errorf("sign: encoding statement: %w", err)
	}
	envelope, err := dsse.WrapSigner(sv, ctypes.IntotoPayloadType).SignMessage(bytes.NewReader(payload), sigopts.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	pub, err := sv.PublicKey(sigopts.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("sign: public key: %w", err)
	}
	pubPEM, err := cryptoutils.MarshalPublicKeyToPEM(pub)
	if err != nil {
		return fmt.Errorf("sign: public key: %w", err)
	}
	bundleBytes, err := cbundle.MakeNewBundle(pub, nil, payload, envelope, pubPEM, nil)
	if err != nil {
		return fmt.Errorf("sign: making bundle: %w", err)
	}
	if err := writeBundleReferrer(digest, subject, bundleBytes, ctypes.CosignSignPredicateType, opts); err != nil {
		return registryErr(fmt.Sprintf("attaching signature bundle to %s", digest), err)
	}
	return nil
}

// writeBundleReferrer stores the bundle exactly as cosign's
// ociremote.WriteAttestationNewBundleFormat does (same config, layer,
// artifactType and annotations, the predicate type of the bundle's
// statement among them), but keeps digest's Repository value for
// every request. cosign re-parses the reference from a string and so drops
// name.Insecure, breaking plain-HTTP registries that are not localhost or
// RFC 1918 addresses.
//
// remote.Put handles registries without the referrers API: after a manifest
// with a subject is pushed it probes GET /v2/<repo>/referrers/<digest> and on
// 404/400 adds the manifest to the sha256-<hex> fallback tag index
// (go-containerregistry's commitSubjectReferrers; forced on in
// remoteOptions).
func writeBundleReferrer(digest name.Digest, subject *v1.Descriptor, bundleBytes []byte, predicateType string, opts []remote.Option) error {
	repo := digest.Context()

	config := static.NewLayer([]byte("{}"), types.OCIConfigJSON)
	if err := remote.WriteLayer(repo, config, opts...); err != nil {
		return fmt.Errorf("uploading config: %w", err)
	}
	configDigest, err := config.Digest()
	if err != nil {
		return err
	}
	configSize, err := config.Size()
	if err != nil {
		return err
	}

	layer := static.NewLayer(bundleBytes, types.MediaType(bundleMediaType))
	if err := remote.WriteLayer(repo, layer, opts...); err != nil {
		return fmt.Errorf("uploading bundle: %w", err)
	}
	layerDigest, err := layer.Digest()
	if err != nil {
		return err
	}

	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config: v1.Descriptor{
			MediaType:    emptyConfigMediaType,
			ArtifactType: bundleMediaType,
			Digest:       configDigest,
			Size:         configSize,
		},
		Layers: []v1.Descriptor{{
			MediaType: types.MediaType(bundleMediaType),
			Digest:    layerDigest,
			Size:      int64(len(bundleBytes)),
		}},
		Subject: &v1.Descriptor{
			MediaType: subject.MediaType,
			Digest:    subject.Digest,
			Size:      subject.Size,
		},
		Annotations: map[string]string{
			"org.opencontainers.image.created": time.Now().UTC().Format(time.RFC3339),
			bundleAnnotationContent:            "dsse-envelope",
			bundleAnnotationPredicate:          predicateType,
		},
		ArtifactType: bundleMediaType,
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return err
	}
	h, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	if err := remote.Put(repo.Digest(h.String()), &rawManifest{raw: raw, mediaType: types.OCIManifestSchema1}, opts...); err != nil {
		return fmt.Errorf("uploading referrer manifest: %w", err)
	}
	return nil
}

// signLegacy follows cosign's signDigest (cmd/cosign/cli/sign) for a key
// without tlog upload: sign the simple-signing payload and append it to the
// sha256-<hex>.sig image, keeping earlier signatures and skipping an
// identical one.
func signLegacy(ctx context.Context, digest name.Digest, sv signature.SignerVerifier, opts []remote.Option) error {
	payload, err := (&sigPayload.Cosign{Image: digest}).MarshalJSON()
	if err != nil {
		return fmt.Errorf("sign: payload: %w", err)
	}
	rawSig, err := sv.SignMessage(bytes.NewReader(payload), sigopts.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	sig, err := ocistatic.NewSignature(payload, base64.StdEncoding.EncodeToString(rawSig))
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	return appendLegacySignature(digest, sig, mutate.WithDupeDetector(cremote.NewDupeDetector(sv)), opts)
}

// appendLegacySignature adds sig to digest's sha256-<hex>.sig image,
// keeping the signatures already there.
func appendLegacySignature(digest name.Digest, sig oci.Signature, sopt mutate.SignOption, opts []remote.Option) error {
	oopts := ociOptions(opts)
	se := ociremote.SignedUnknown(digest, oopts...)
	var sopts []mutate.SignOption
	if sopt != nil {
		sopts = append(sopts, sopt)
	}
	newSE, err := mutate.AttachSignatureToEntity(se, sig, sopts...)
	if err != nil {
		return registryErr(fmt.Sprintf("reading existing signatures of %s", digest), err)
	}
	if err := ociremote.WriteSignatures(digest.Repository, newSE, oopts...); err != nil {
		return registryErr(fmt.Sprintf("writing signature tag for %s", digest), err)
	}
	return nil
}

// rawManifest is a remote.Taggable for pre-serialised manifests.
type rawManifest struct {
	raw       []byte
	mediaType types.MediaType
}

var _ remote.Taggable = (*rawManifest)(nil)

// RawManifest implements remote.Taggable.
func (r *rawManifest) RawManifest() ([]byte, error) { return r.raw, nil }

// MediaType lets go-containerregistry send the right Content-Type.
func (r *rawManifest) MediaType() (types.MediaType, error) { return r.mediaType, nil }

// remoteOptions appends the options this package relies on after the
// caller's: ctx, and the referrers tag fallback (go-containerregistry's
// default, forced so a caller cannot silently disable it).
func remoteOptions(ctx context.Context, ropts []remote.Option) []remote.Option {
	opts := make([]remote.Option, 0, len(ropts)+2)
	opts = append(opts, ropts...)
	return append(opts, remote.WithContext(ctx), remote.WithReferrersTagFallback(true))
}

// ociOptions hands exactly opts to cosign's ociremote, replacing its default
// of reading the docker config keychain.
func ociOptions(opts []remote.Option) []ociremote.Option {
	return []ociremote.Option{ociremote.WithRemoteOptions(opts...)}
}

// registryErr wraps a registry failure with ErrRegistry and context.
func registryErr(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrRegistry, what, err)
}
