// Package keylesstest makes cosign-style KEYLESS signatures for tests, with
// sigstore-go's in-memory VirtualSigstore standing in for Fulcio, Rekor and
// a timestamp authority. Nothing touches the network.
//
// It is shared by policy/cosign's tests and the test/tools/keylesssign
// command (the end-to-end tests' signer). It only builds signatures and
// trust roots; storing them in a registry is policy/cosign's job
// (cosign.AttachBundle), so this package does not import policy/cosign.
//
// The VirtualSigstore issues leaf certificates whose subject (the signer
// identity) is an rfc822Name SAN holding the identity string verbatim, and
// whose OIDC issuer is in the 1.3.6.1.4.1.57264.1.1 extension. Its
// certificates carry no SCTs, which is why TrustedRoot leaves the CT logs
// out. Its CA, log and TSA validity windows start about when New is called
// and end an hour (the TSA leaf: five minutes) later: sign soon after New.
// Verification may happen any time later, since it is evaluated at the
// signature's logged/timestamped time.
package keylesstest

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	intotov1 "github.com/in-toto/attestation/go/v1"
	cbundle "github.com/sigstore/cosign/v2/pkg/cosign/bundle"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	sigPayload "github.com/sigstore/sigstore/pkg/signature/payload"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

const (
	// CosignSignPredicateType is the predicate type of the in-toto
	// statement cosign v3 signs for an image.
	CosignSignPredicateType = "https://sigstore.dev/cosign/sign/v1"
	// IntotoPayloadType is the DSSE payload type of in-toto statements.
	IntotoPayloadType = "application/vnd.in-toto+json"
)

// Sigstore is a throw-away keyless signing infrastructure.
type Sigstore struct {
	*ca.VirtualSigstore
}

// New creates a fresh VirtualSigstore with its own CA, log and TSA keys.
func New() (*Sigstore, error) {
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		return nil, fmt.Errorf("creating virtual sigstore: %w", err)
	}
	return &Sigstore{VirtualSigstore: vs}, nil
}

// Statement is the in-toto statement `cosign sign` (bundle format) signs
// for the manifest digest ("sha256:<hex>").
func Statement(digest string) ([]byte, error) {
	alg, hexDigest, ok := strings.Cut(digest, ":")
	if !ok || alg == "" || hexDigest == "" {
		return nil, fmt.Errorf("malformed digest %q", digest)
	}
	return protojson.Marshal(&intotov1.Statement{
		Type:          intotov1.StatementTypeUri,
		Subject:       []*intotov1.ResourceDescriptor{{Digest: map[string]string{alg: hexDigest}}},
		PredicateType: CosignSignPredicateType,
	})
}

// SignBundle signs digest ("sha256:<hex>") keyless as identity/issuer and
// returns the sigstore bundle v0.3 JSON cosign v3 would attach: a DSSE
// envelope over Statement(digest), the Fulcio-style leaf certificate, a
// Rekor dsse entry with inclusion promise and proof, and an RFC 3161
// timestamp.
func (s *Sigstore) SignBundle(digest, identity, issuer string) ([]byte, error) {
	statement, err := Statement(digest)
	if err != nil {
		return nil, err
	}
	return s.SignStatement(statement, identity, issuer)
}

// SignPredicate signs keyless, as `cosign attest --new-bundle-format
// --type predicateType --predicate FILE REPO@digest` does, the in-toto
// statement about digest ("sha256:<hex>") carrying predicate (JSON).
func (s *Sigstore) SignPredicate(digest, predicateType string, predicate []byte, identity, issuer string) ([]byte, error) {
	alg, hexDigest, ok := strings.Cut(digest, ":")
	if !ok || alg == "" || hexDigest == "" {
		return nil, fmt.Errorf("malformed digest %q", digest)
	}
	statement, err := json.Marshal(map[string]any{
		"_type":         intotov1.StatementTypeUri,
		"subject":       []any{map[string]any{"digest": map[string]string{alg: hexDigest}}},
		"predicateType": predicateType,
		"predicate":     json.RawMessage(predicate),
	})
	if err != nil {
		return nil, fmt.Errorf("predicate: %w", err)
	}
	return s.SignStatement(statement, identity, issuer)
}

// SignStatement is SignBundle for an arbitrary in-toto statement.
func (s *Sigstore) SignStatement(statement []byte, identity, issuer string) ([]byte, error) {
	// The time Attest uses: inside the leaf certificate's validity.
	entity, err := s.AttestAtTime(identity, issuer, statement, time.Now().Add(5*time.Minute), true)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	vc, err := entity.VerificationContent()
	if err != nil {
		return nil, err
	}
	leaf := vc.Certificate()
	if leaf == nil {
		return nil, errors.New("virtual sigstore returned no certificate")
	}
	sc, err := entity.SignatureContent()
	if err != nil {
		return nil, err
	}
	env, ok := sc.(*sgbundle.Envelope)
	if !ok || env.Envelope == nil {
		return nil, fmt.Errorf("virtual sigstore returned %T, want a DSSE envelope", sc)
	}
	pbEnv, err := envelopeProto(env)
	if err != nil {
		return nil, err
	}
	entries, err := entity.TlogEntries()
	if err != nil {
		return nil, err
	}
	var tles []*protorekor.TransparencyLogEntry
	for _, e := range entries {
		tle, err := s.completeEntry(e)
		if err != nil {
			return nil, err
		}
		tles = append(tles, tle)
	}
	tsrs, err := entity.Timestamps()
	if err != nil {
		return nil, err
	}
	var ts []*protocommon.RFC3161SignedTimestamp
	for _, t := range tsrs {
		ts = append(ts, &protocommon.RFC3161SignedTimestamp{SignedTimestamp: t})
	}
	mediaType, err := sgbundle.MediaTypeString("0.3")
	if err != nil {
		return nil, err
	}
	pb := &protobundle.Bundle{
		MediaType: mediaType,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_Certificate{
				Certificate: &protocommon.X509Certificate{RawBytes: leaf.Raw},
			},
			TlogEntries:               tles,
			TimestampVerificationData: &protobundle.TimestampVerificationData{Rfc3161Timestamps: ts},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: pbEnv},
	}
	b, err := sgbundle.NewBundle(pb) // validates the result
	if err != nil {
		return nil, fmt.Errorf("assembling bundle: %w", err)
	}
	return b.MarshalJSON()
}

func envelopeProto(env *sgbundle.Envelope) (*protodsse.Envelope, error) {
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return nil, fmt.Errorf("envelope payload: %w", err)
	}
	out := &protodsse.Envelope{Payload: payload, PayloadType: env.PayloadType}
	for _, sig := range env.Signatures {
		raw, err := base64.StdEncoding.DecodeString(sig.Sig)
		if err != nil {
			return nil, fmt.Errorf("envelope signature: %w", err)
		}
		out.Signatures = append(out.Signatures, &protodsse.Signature{Sig: raw, Keyid: sig.KeyID})
	}
	return out, nil
}

// completeEntry turns the VirtualSigstore's Rekor v1 entry into the proto a
// bundle carries: tlog.NewEntry keeps neither the kind/version nor the
// signed entry timestamp in it, so both are rebuilt (the SET is signed
// again by the virtual Rekor over the same canonical payload).
func (s *Sigstore) completeEntry(e *tlog.Entry) (*protorekor.TransparencyLogEntry, error) {
	tle, ok := proto.Clone(e.TransparencyLogEntry()).(*protorekor.TransparencyLogEntry)
	if !ok || tle == nil {
		return nil, errors.New("tlog entry without proto")
	}
	var kv struct {
		Kind       string `json:"kind"`
		APIVersion string `json:"apiVersion"`
	}
	if err := json.Unmarshal(tle.GetCanonicalizedBody(), &kv); err != nil {
		return nil, fmt.Errorf("tlog entry body: %w", err)
	}
	tle.KindVersion = &protorekor.KindVersion{Kind: kv.Kind, Version: kv.APIVersion}
	set, err := s.RekorSignPayload(tlog.RekorPayload{
		Body:           base64.StdEncoding.EncodeToString(tle.GetCanonicalizedBody()),
		IntegratedTime: tle.GetIntegratedTime(),
		LogIndex:       tle.GetLogIndex(),
		LogID:          hex.EncodeToString(tle.GetLogId().GetKeyId()),
	})
	if err != nil {
		return nil, fmt.Errorf("signing entry timestamp: %w", err)
	}
	tle.InclusionPromise = &protorekor.InclusionPromise{SignedEntryTimestamp: set}
	return tle, nil
}

// LegacySignature is a cosign v2 keyless signature for the sha256-<hex>.sig
// tag: the simple-signing payload, its base64 signature, and the values of
// the dev.sigstore.cosign/certificate, .../chain, .../bundle and
// .../rfc3161timestamp layer annotations (ocistatic.WithCertChain,
// WithBundle, WithRFC3161Timestamp).
type LegacySignature struct {
	Payload   []byte
	Signature string // base64
	Cert      []byte // PEM leaf
	Chain     []byte // PEM intermediates and root
	Bundle    *cbundle.RekorBundle
	Timestamp *cbundle.RFC3161Timestamp // from the virtual TSA, over the signature
}

// SignLegacy signs digest keyless in cosign's legacy format: a hashedrekord
// Rekor entry over the simple-signing payload, with its inclusion promise,
// and an RFC 3161 timestamp over the signature.
func (s *Sigstore) SignLegacy(digest name.Digest, identity, issuer string) (*LegacySignature, error) {
	payload, err := (&sigPayload.Cosign{Image: digest}).MarshalJSON()
	if err != nil {
		return nil, err
	}
	entity, err := s.Sign(identity, issuer, payload)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	vc, err := entity.VerificationContent()
	if err != nil {
		return nil, err
	}
	leaf := vc.Certificate()
	sc, err := entity.SignatureContent()
	if err != nil {
		return nil, err
	}
	entries, err := entity.TlogEntries()
	if err != nil {
		return nil, err
	}
	if leaf == nil || len(entries) != 1 {
		return nil, errors.New("virtual sigstore returned no certificate or tlog entry")
	}
	tle := entries[0].TransparencyLogEntry()
	rp := tlog.RekorPayload{
		Body:           base64.StdEncoding.EncodeToString(tle.GetCanonicalizedBody()),
		IntegratedTime: tle.GetIntegratedTime(),
		LogIndex:       tle.GetLogIndex(),
		LogID:          hex.EncodeToString(tle.GetLogId().GetKeyId()),
	}
	set, err := s.RekorSignPayload(rp)
	if err != nil {
		return nil, err
	}
	tsr, err := s.TimestampResponse(sc.Signature())
	if err != nil {
		return nil, err
	}
	certPEM, err := cryptoutils.MarshalCertificateToPEM(leaf)
	if err != nil {
		return nil, err
	}
	fca, ok := s.FulcioCertificateAuthorities()[0].(*root.FulcioCertificateAuthority)
	if !ok {
		return nil, errors.New("unexpected certificate authority type")
	}
	chainPEM, err := cryptoutils.MarshalCertificatesToPEM(append(append([]*x509.Certificate{}, fca.Intermediates...), fca.Root))
	if err != nil {
		return nil, err
	}
	return &LegacySignature{
		Payload:   payload,
		Signature: base64.StdEncoding.EncodeToString(sc.Signature()),
		Cert:      certPEM,
		Chain:     chainPEM,
		Bundle: &cbundle.RekorBundle{
			SignedEntryTimestamp: set,
			Payload: cbundle.RekorPayload{
				Body: rp.Body, IntegratedTime: rp.IntegratedTime, LogIndex: rp.LogIndex, LogID: rp.LogID,
			},
		},
		Timestamp: &cbundle.RFC3161Timestamp{SignedRFC3161Timestamp: tsr},
	}, nil
}

// TrustedRoot returns the virtual sigstore's trust material as a
// trusted_root.json-serialisable *root.TrustedRoot: its Fulcio CA chain,
// Rekor key and TSA chain. CT logs are left out because the virtual
// Fulcio's certificates carry no SCTs (a trusted root listing CT logs makes
// policy/cosign require one).
func (s *Sigstore) TrustedRoot() (*root.TrustedRoot, error) {
	// VirtualSigstore.RekorLogs sets ID to the hex text of the log ID; a
	// trusted_root.json holds the raw key ID, which is what gets hex-encoded
	// as map key on parsing. Store the raw bytes so it round-trips.
	tlogs := map[string]*root.TransparencyLog{}
	for id, tl := range s.RekorLogs() {
		raw, err := hex.DecodeString(id)
		if err != nil {
			return nil, fmt.Errorf("rekor log id %q: %w", id, err)
		}
		c := *tl
		c.ID = raw
		tlogs[id] = &c
	}
	return root.NewTrustedRoot(root.TrustedRootMediaType01,
		s.FulcioCertificateAuthorities(), nil, s.TimestampingAuthorities(), tlogs)
}

// TrustedRootJSON is TrustedRoot serialised as a trusted_root.json.
func (s *Sigstore) TrustedRootJSON() ([]byte, error) {
	tr, err := s.TrustedRoot()
	if err != nil {
		return nil, err
	}
	return tr.MarshalJSON()
}

// WriteTrustedRoot writes TrustedRootJSON to path (mode 0644: it is public).
func (s *Sigstore) WriteTrustedRoot(path string) error {
	b, err := s.TrustedRootJSON()
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil { //nolint:gosec // public trust material
		return fmt.Errorf("writing trusted root: %w", err)
	}
	return nil
}
