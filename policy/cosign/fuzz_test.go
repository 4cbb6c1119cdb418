package cosign

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	intotov1 "github.com/in-toto/attestation/go/v1"
	cbundle "github.com/sigstore/cosign/v2/pkg/cosign/bundle"
	ocistatic "github.com/sigstore/cosign/v2/pkg/oci/static"
	ctypes "github.com/sigstore/cosign/v2/pkg/types"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
	sigPayload "github.com/sigstore/sigstore/pkg/signature/payload"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/berth-dev/berth/internal/signtest"
)

// The signature fuzzers sign with a fixed key (testdata/fuzz-key.pem, a
// test key and nothing else) so that the seed signatures verify in every
// fuzzing process. They check that what is accepted is what the signed
// claim says: fuzzing the claim under a valid signature finds the inputs a
// parser would wrongly accept, which random signature bytes never would.

// fuzzDigest is the artifact the fuzzed signatures are checked for.
var fuzzDigest = name.MustParseReference("registry.invalid/fleet@sha256:abababababababababababababababababababababababababababababababab").(name.Digest)

type fuzzSigner struct {
	sv  signature.SignerVerifier
	key Key
	c   *compiled
	pem []byte
}

func newFuzzSigner(f testing.TB) *fuzzSigner {
	raw, err := os.ReadFile("testdata/fuzz-key.pem")
	if err != nil {
		f.Fatal(err)
	}
	blk, _ := pem.Decode(raw)
	priv, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		f.Fatal(err)
	}
	sk := signtest.KeyOf(f, priv)
	k, err := ParsePublicKey("fuzz", sk.PublicPEM)
	if err != nil {
		f.Fatal(err)
	}
	c, err := compilePolicy(Policy{Keys: []Key{k}})
	if err != nil {
		f.Fatal(err)
	}
	return &fuzzSigner{sv: sk.Signer, key: k, c: c, pem: sk.PublicPEM}
}

// bundle wraps payload, signed, in a DSSE envelope of payloadType in a
// sigstore bundle v0.3, as `cosign sign --new-bundle-format --key` does.
func (s *fuzzSigner) bundle(t testing.TB, payloadType string, payload []byte) []byte {
	env, err := dsse.WrapSigner(s.sv, payloadType).SignMessage(bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := s.sv.PublicKey()
	b, err := cbundle.MakeNewBundle(pub, nil, payload, env, s.pem, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// statement is the in-toto statement cosign signs for digest hex.
func statement(t testing.TB, hex, predicateType string) []byte {
	b, err := protojson.Marshal(&intotov1.Statement{
		Type:          intotov1.StatementTypeUri,
		Subject:       []*intotov1.ResourceDescriptor{{Digest: map[string]string{"sha256": hex}}},
		PredicateType: predicateType,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fuzzHash(t testing.TB) v1.Hash {
	h, err := v1.NewHash(fuzzDigest.DigestStr())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// checkStatementNames fails unless payload is an in-toto statement with
// the cosign sign predicate type naming fuzzDigest: what a verified bundle
// must hold.
func checkStatementNames(t *testing.T, payload []byte) {
	t.Helper()
	var st intotov1.Statement
	if err := protojson.Unmarshal(payload, &st); err != nil {
		t.Fatalf("accepted a bundle whose statement does not parse (%v): %q", err, payload)
	}
	if st.GetPredicateType() != ctypes.CosignSignPredicateType {
		t.Fatalf("accepted predicate type %q: %q", st.GetPredicateType(), payload)
	}
	want := fuzzHash(t)
	for _, s := range st.GetSubject() {
		if s.GetDigest()[want.Algorithm] == want.Hex {
			return
		}
	}
	t.Fatalf("accepted a statement that does not name %s: %q", want, payload)
}

// verifyFuzzBundle runs the bundle verification of VerifyPolicy on raw.
func (s *fuzzSigner) verifyFuzzBundle(t *testing.T, raw []byte) (*Result, *findings, error) {
	b, err := parseBundle(raw)
	if err != nil {
		return nil, nil, err
	}
	if !isSignStatement(b) {
		return nil, nil, errors.New("not a sign statement")
	}
	h := fuzzHash(t)
	want, _ := hex.DecodeString(h.Hex)
	f := &findings{}
	desc := v1.Descriptor{Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("cd", 32)}}
	return s.c.verifyBundle(fuzzDigest, desc, b, h, want, f), f, nil
}

// FuzzBundle parses arbitrary bytes as the sigstore bundle of a referrer
// and verifies them with the fixed key for fuzzDigest. Seeds are real
// bundles: one for the digest, one copied from another digest, one of
// another predicate type, one over an SBOM-like payload. Parsing and
// verifying must never panic, and a bundle accepted must carry a
// statement naming the digest with the cosign sign predicate type.
func FuzzBundle(f *testing.F) {
	s := newFuzzSigner(f)
	hexd := strings.Repeat("ab", 32)
	f.Add(s.bundle(f, ctypes.IntotoPayloadType, statement(f, hexd, ctypes.CosignSignPredicateType)))
	f.Add(s.bundle(f, ctypes.IntotoPayloadType, statement(f, strings.Repeat("12", 32), ctypes.CosignSignPredicateType)))
	f.Add(s.bundle(f, ctypes.IntotoPayloadType, statement(f, hexd, "https://slsa.dev/provenance/v1")))
	f.Add(s.bundle(f, "application/json", []byte(`{"critical":{}}`)))
	f.Add([]byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		res, fd, err := s.verifyFuzzBundle(t, raw)
		if err != nil || res == nil {
			if fd != nil && fd.mismatched > 0 && len(fd.mismatches) == 0 {
				t.Fatal("a mismatch was counted but not described")
			}
			return
		}
		b, _ := parseBundle(raw)
		checkStatementNames(t, b.GetDsseEnvelope().GetPayload())
		if res.Key != "fuzz" || res.Format != FormatBundle || res.Digest != fuzzDigest {
			t.Fatalf("result %+v", res)
		}
	})
}

// FuzzStatement signs arbitrary DSSE payloads (the in-toto statement) with
// the fixed key and verifies the bundle for fuzzDigest: the signature is
// always valid, so only the statement decides. A statement is accepted
// only when it parses, has the cosign sign predicate type and names the
// digest; one naming another digest counts as a mismatch, never as
// accepted.
func FuzzStatement(f *testing.F) {
	s := newFuzzSigner(f)
	hexd := strings.Repeat("ab", 32)
	for _, p := range []string{
		string(statement(f, hexd, ctypes.CosignSignPredicateType)),
		string(statement(f, strings.Repeat("12", 32), ctypes.CosignSignPredicateType)),
		`{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"` + strings.Repeat("12", 32) + `"}},{"digest":{"sha256":"` + hexd + `"}}],"predicateType":"https://sigstore.dev/cosign/sign/v1"}`,
		`{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"` + hexd + `"}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicateType":"https://slsa.dev/provenance/v1"}`,
		`{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"SHA256":"` + strings.ToUpper(hexd) + `"}}],"predicateType":"https://sigstore.dev/cosign/sign/v1"}`,
		`{"_type":"https://in-toto.io/Statement/v0.1","subject":[{"name":"x","digest":{"sha256":"` + hexd + `"}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{}}`,
	} {
		f.Add([]byte(p), ctypes.IntotoPayloadType)
	}
	f.Fuzz(func(t *testing.T, payload []byte, payloadType string) {
		raw := s.bundle(t, payloadType, payload)
		res, fd, err := s.verifyFuzzBundle(t, raw)
		if err != nil || res == nil {
			return
		}
		if payloadType != ctypes.IntotoPayloadType {
			t.Fatalf("accepted payload type %q", payloadType)
		}
		checkStatementNames(t, payload)
		if fd.mismatched != 0 {
			t.Fatalf("accepted after %d mismatches", fd.mismatched)
		}
	})
}

// FuzzLegacyPayload signs arbitrary simple-signing payloads (the legacy
// .sig format) with the fixed key and verifies them for fuzzDigest, as
// VerifyPolicy does with a .sig tag's layers. A payload is accepted only
// when it parses and its critical.image.docker-manifest-digest is the
// digest; claimedDigest, used in messages, never panics.
func FuzzLegacyPayload(f *testing.F) {
	s := newFuzzSigner(f)
	good, err := sigPayload.Cosign{Image: fuzzDigest}.MarshalJSON()
	if err != nil {
		f.Fatal(err)
	}
	other, _ := sigPayload.Cosign{Image: fuzzDigest.Context().Digest("sha256:" + strings.Repeat("12", 32))}.MarshalJSON()
	f.Add(good)
	f.Add(other)
	f.Add([]byte(`{"critical":{"identity":{"docker-reference":"registry.invalid/fleet"},"image":{"docker-manifest-digest":"` + fuzzDigest.DigestStr() + `"},"type":"cosign container image signature"},"optional":null,"critical":{"image":{"docker-manifest-digest":"sha256:00"}}}`))
	f.Add([]byte(`{"critical":{"image":{"Docker-Manifest-Digest":"` + fuzzDigest.DigestStr() + `"}}}`))
	tag := fuzzDigest.Context().Tag("sha256-" + strings.Repeat("ab", 32) + ".sig")
	f.Fuzz(func(t *testing.T, payload []byte) {
		sig, err := s.sv.SignMessage(bytes.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		ociSig, err := ocistatic.NewSignature(payload, base64.StdEncoding.EncodeToString(sig))
		if err != nil {
			t.Fatal(err)
		}
		fd := &findings{}
		res := s.c.verifyLegacySig(context.Background(), fuzzDigest, fuzzHash(t), tag, 0, ociSig, fd)
		claimed := claimedDigest(ociSig)
		if res == nil {
			return
		}
		var ss sigPayload.SimpleContainerImage
		if err := json.Unmarshal(payload, &ss); err != nil {
			t.Fatalf("accepted a payload that does not parse (%v): %q", err, payload)
		}
		if got := ss.Critical.Image.DockerManifestDigest; got != fuzzDigest.DigestStr() || claimed != got {
			t.Fatalf("accepted a payload claiming %q (described as %q), want %s: %q", got, claimed, fuzzDigest.DigestStr(), payload)
		}
	})
}

// FuzzReferrerManifest decodes arbitrary referrer manifests the way the
// bundle search does before fetching a layer. It must never panic; a
// manifest is used only when it is an OCI manifest with exactly one layer
// of a sigstore bundle media type no larger than the cap; other referrers
// (SBOMs, attestations) are skipped with errNotBundle, not reported as
// broken signatures.
func FuzzReferrerManifest(f *testing.F) {
	d := "sha256:" + strings.Repeat("ab", 32)
	bundleRef := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","size":3329,"digest":"` + d + `"}],"annotations":{"dev.sigstore.bundle.content":"dsse-envelope","dev.sigstore.bundle.predicateType":"https://sigstore.dev/cosign/sign/v1","org.opencontainers.image.created":"2025-06-01T10:00:00Z"},"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":512,"digest":"` + d + `"}}`
	for _, s := range []string{
		bundleRef,
		strings.Replace(bundleRef, "https://sigstore.dev/cosign/sign/v1", "https://slsa.dev/provenance/v1", 1),
		`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","size":2,"digest":"` + d + `"},"layers":[{"mediaType":"application/spdx+json","size":10,"digest":"` + d + `"}]}`,
		strings.Replace(bundleRef, `"size":3329`, `"size":99999999`, 1),
	} {
		f.Add([]byte(s), string(types.OCIManifestSchema1))
	}
	f.Add([]byte(bundleRef), string(types.DockerManifestSchema2))
	f.Fuzz(func(t *testing.T, raw []byte, mediaType string) {
		ld, err := bundleLayer(types.MediaType(mediaType), raw)
		if err != nil {
			var nb errNotBundle
			if errors.As(err, &nb) && mediaType == string(types.OCIManifestSchema1) && json.Unmarshal(raw, new(v1.Manifest)) != nil {
				t.Fatalf("undecodable manifest skipped as not a bundle: %v", err)
			}
			return
		}
		if mediaType != string(types.OCIManifestSchema1) {
			t.Fatalf("used a referrer of media type %q", mediaType)
		}
		if !strings.HasPrefix(string(ld.MediaType), bundleMediaTypePrefix) || ld.Size > maxSignatureSize {
			t.Fatalf("used layer %+v", ld)
		}
		var m v1.Manifest
		if err := json.Unmarshal(raw, &m); err != nil || len(m.Layers) != 1 {
			t.Fatalf("used a manifest that does not decode to one layer: %v", err)
		}
		if pt, ok := m.Annotations[bundleAnnotationPredicate]; ok && pt != ctypes.CosignSignPredicateType {
			t.Fatalf("used a bundle of predicate type %q", pt)
		}
	})
}

// TestFuzzSeeds checks that the fuzzers' seeds reach what they guard: the
// good bundle and payload verify, the copied ones are mismatches. Without
// this a broken signer would leave the fuzzers' properties unexercised.
func TestFuzzSeeds(t *testing.T) {
	s := newFuzzSigner(t)
	hexd := strings.Repeat("ab", 32)
	res, _, err := s.verifyFuzzBundle(t, s.bundle(t, ctypes.IntotoPayloadType, statement(t, hexd, ctypes.CosignSignPredicateType)))
	if err != nil || res == nil {
		t.Fatalf("good bundle: %v, %v", res, err)
	}
	res, fd, err := s.verifyFuzzBundle(t, s.bundle(t, ctypes.IntotoPayloadType, statement(t, strings.Repeat("12", 32), ctypes.CosignSignPredicateType)))
	if err != nil || res != nil || fd.mismatched != 1 {
		t.Fatalf("copied bundle: %v, %+v, %v", res, fd, err)
	}
	for _, tc := range []struct {
		d    name.Digest
		want bool
	}{{fuzzDigest, true}, {fuzzDigest.Context().Digest("sha256:" + strings.Repeat("12", 32)), false}} {
		payload, _ := sigPayload.Cosign{Image: tc.d}.MarshalJSON()
		sig, _ := s.sv.SignMessage(bytes.NewReader(payload))
		ociSig, _ := ocistatic.NewSignature(payload, base64.StdEncoding.EncodeToString(sig))
		fd := &findings{}
		res := s.c.verifyLegacySig(context.Background(), fuzzDigest, fuzzHash(t), fuzzDigest.Context().Tag("x"), 0, ociSig, fd)
		if (res != nil) != tc.want || (!tc.want && fd.mismatched != 1) {
			t.Errorf("legacy payload for %s: %+v, %+v", tc.d, res, fd)
		}
	}
}
