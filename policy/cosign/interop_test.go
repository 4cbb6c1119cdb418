package cosign

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	intotov1 "github.com/in-toto/attestation/go/v1"
	cbundle "github.com/sigstore/cosign/v2/pkg/cosign/bundle"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	ctypes "github.com/sigstore/cosign/v2/pkg/types"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// referrerManifest fetches the single bundle referrer of d.
func referrerManifest(t *testing.T, d name.Digest) (v1.Descriptor, v1.Manifest) {
	t.Helper()
	refs := bundleReferrers(t, d)
	if len(refs) != 1 {
		t.Fatalf("%d bundle referrers on %s, want 1", len(refs), d)
	}
	got, err := remote.Get(d.Context().Digest(refs[0].Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(got.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	return refs[0], m
}

func layerBytes(t *testing.T, repo name.Repository, h v1.Hash) []byte {
	t.Helper()
	l, err := remote.Layer(repo.Digest(h.String()))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBundleInteroperability checks the stored bundle is what cosign v3
// (`cosign sign --new-bundle-format`) writes and sigstore-go reads.
func TestBundleInteroperability(t *testing.T) {
	for _, mode := range registryModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			host := startRegistry(t, mode.referrers)
			d, _ := pushImage(t, host)
			k := newTestKey(t, "cosign.pub")
			mustSign(t, d, k, FormatBundle)

			desc, m := referrerManifest(t, d)
			if m.MediaType != types.OCIManifestSchema1 {
				t.Errorf("referrer mediaType = %s", m.MediaType)
			}
			if m.ArtifactType != "application/vnd.dev.sigstore.bundle.v0.3+json" {
				t.Errorf("artifactType = %q", m.ArtifactType)
			}
			if m.Subject == nil || m.Subject.Digest.String() != d.DigestStr() {
				t.Fatalf("subject = %+v, want %s", m.Subject, d.DigestStr())
			}
			if m.Config.MediaType != "application/vnd.oci.empty.v1+json" {
				t.Errorf("config mediaType = %s", m.Config.MediaType)
			}
			if got := m.Annotations["dev.sigstore.bundle.predicateType"]; got != "https://sigstore.dev/cosign/sign/v1" {
				t.Errorf("predicateType annotation = %q", got)
			}
			if len(m.Layers) != 1 || m.Layers[0].MediaType != "application/vnd.dev.sigstore.bundle.v0.3+json" {
				t.Fatalf("layers = %+v", m.Layers)
			}
			if !mode.referrers && desc.ArtifactType != m.ArtifactType {
				t.Errorf("fallback index descriptor artifactType = %q", desc.ArtifactType)
			}

			raw := layerBytes(t, d.Repository, m.Layers[0].Digest)
			var b sgbundle.Bundle
			if err := b.UnmarshalJSON(raw); err != nil {
				t.Fatalf("sigstore-go cannot parse the bundle: %v", err)
			}
			if b.GetMediaType() != "application/vnd.dev.sigstore.bundle.v0.3+json" {
				t.Errorf("bundle mediaType = %q", b.GetMediaType())
			}
			if len(b.GetVerificationMaterial().GetTlogEntries()) != 0 {
				t.Error("bundle has tlog entries; signing must stay offline")
			}
			if b.GetVerificationMaterial().GetPublicKey() == nil {
				t.Error("bundle verification material is not a public key hint")
			}
			env := b.GetDsseEnvelope()
			if env == nil {
				t.Fatal("bundle has no DSSE envelope")
			}
			if env.GetPayloadType() != "application/vnd.in-toto+json" || len(env.GetSignatures()) != 1 {
				t.Errorf("envelope payloadType %q, %d signatures", env.GetPayloadType(), len(env.GetSignatures()))
			}
			var st intotov1.Statement
			if err := protojson.Unmarshal(env.GetPayload(), &st); err != nil {
				t.Fatalf("statement: %v", err)
			}
			if st.GetPredicateType() != ctypes.CosignSignPredicateType {
				t.Errorf("predicateType = %q", st.GetPredicateType())
			}
			h, _ := v1.NewHash(d.DigestStr())
			if len(st.GetSubject()) != 1 || st.GetSubject()[0].GetDigest()["sha256"] != h.Hex {
				t.Errorf("statement subject = %v, want sha256 %s", st.GetSubject(), h.Hex)
			}

			// The same bundle written by cosign's own
			// ociremote.WriteAttestationNewBundleFormat gives the same
			// manifest (bar the creation time) and verifies here too.
			repo2, err := name.NewRepository(d.RegistryStr() + "/berth/cosign-written")
			if err != nil {
				t.Fatal(err)
			}
			img, err := remote.Image(d)
			if err != nil {
				t.Fatal(err)
			}
			d2 := pushTo(t, repo2, img) // same artifact, second repository
			if err := ociremote.WriteAttestationNewBundleFormat(d2, raw, ctypes.CosignSignPredicateType, ociremote.WithRemoteOptions()); err != nil {
				t.Fatalf("cosign write: %v", err)
			}
			_, m2 := referrerManifest(t, d2)
			for _, mm := range []*v1.Manifest{&m, &m2} {
				delete(mm.Annotations, "org.opencontainers.image.created")
			}
			if !reflect.DeepEqual(m, m2) {
				a, _ := json.Marshal(m)
				b, _ := json.Marshal(m2)
				t.Errorf("manifest differs from cosign's:\n ours:   %s\n cosign: %s", a, b)
			}
			res, err := Verify(context.Background(), d2, []Key{k.key})
			if err != nil || res.Format != FormatBundle {
				t.Errorf("cosign-written bundle: %+v, %v", res, err)
			}
		})
	}
}

// TestReferrersTagFallback pins what go-containerregistry does when the
// registry lacks the referrers API: remote.Put of a manifest with a subject
// probes GET /v2/<repo>/referrers/<digest>, and on 404 maintains the
// sha256-<hex> fallback tag index, which remote.Referrers then reads. With the
// API, no fallback tag is written.
func TestReferrersTagFallback(t *testing.T) {
	for _, mode := range registryModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			host := startRegistry(t, mode.referrers)
			d, _ := pushImage(t, host)
			k1, k2 := newTestKey(t, "k1"), newTestKey(t, "k2")
			mustSign(t, d, k1, FormatBundle)
			mustSign(t, d, k2, FormatBundle)

			fallback := d.Context().Tag(strings.Replace(d.DigestStr(), ":", "-", 1))
			got, err := remote.Get(fallback)
			if mode.referrers {
				var terr *transport.Error
				if !errors.As(err, &terr) || terr.StatusCode != http.StatusNotFound {
					t.Fatalf("fallback tag with referrers API: %v, want 404", err)
				}
			} else {
				if err != nil {
					t.Fatalf("fallback tag %s: %v", fallback, err)
				}
				if got.MediaType != types.OCIImageIndex {
					t.Errorf("fallback tag mediaType = %s", got.MediaType)
				}
				var idx v1.IndexManifest
				if err := json.Unmarshal(got.Manifest, &idx); err != nil {
					t.Fatal(err)
				}
				if len(idx.Manifests) != 2 {
					t.Fatalf("fallback index has %d entries, want 2 (one per signature)", len(idx.Manifests))
				}
				for _, desc := range idx.Manifests {
					if desc.ArtifactType != bundleMediaType || desc.Annotations[bundleAnnotationPredicate] != ctypes.CosignSignPredicateType {
						t.Errorf("fallback entry %+v", desc)
					}
				}
			}
			if n := len(bundleReferrers(t, d)); n != 2 {
				t.Errorf("remote.Referrers lists %d bundles, want 2", n)
			}
		})
	}
}

// attest writes a key-signed bundle over an in-toto statement about d with
// the given predicate type, as `cosign attest --new-bundle-format` does, with
// annotated as the referrer's predicateType annotation.
func attest(t *testing.T, d name.Digest, k testKey, predicateType, annotated string) {
	t.Helper()
	h, _ := v1.NewHash(d.DigestStr())
	st := &intotov1.Statement{
		Type:          intotov1.StatementTypeUri,
		Subject:       []*intotov1.ResourceDescriptor{{Digest: map[string]string{h.Algorithm: h.Hex}}},
		PredicateType: predicateType,
		Predicate:     &structpb.Struct{Fields: map[string]*structpb.Value{"builder": structpb.NewStringValue("ci")}},
	}
	payload, err := protojson.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	env, err := dsse.WrapSigner(k.sv, ctypes.IntotoPayloadType).SignMessage(bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := k.sv.PublicKey()
	pubPEM, _ := cryptoutils.MarshalPublicKeyToPEM(pub)
	b, err := cbundle.MakeNewBundle(pub, nil, payload, env, pubPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ociremote.WriteAttestationNewBundleFormat(d, b, annotated, ociremote.WithRemoteOptions()); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyIgnoresOtherAttestations: bundles over other predicate types
// (SLSA provenance, ...) signed with the trusted key are attestations, not
// signatures, even when the unsigned annotation claims otherwise.
func TestVerifyIgnoresOtherAttestations(t *testing.T) {
	const slsa = "https://slsa.dev/provenance/v1"
	for _, mode := range registryModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			host := startRegistry(t, mode.referrers)
			k := newTestKey(t, "k.pub")
			for _, tc := range []struct {
				name      string
				annotated string
				sign      bool
				wantErr   error
			}{
				{"provenance only", slsa, false, ErrNoSignature},
				{"provenance with a lying annotation", ctypes.CosignSignPredicateType, false, ErrNoSignature},
				{"provenance and a signature", slsa, true, nil},
			} {
				t.Run(tc.name, func(t *testing.T) {
					d, _ := pushImage(t, host)
					attest(t, d, k, slsa, tc.annotated)
					if tc.sign {
						mustSign(t, d, k, FormatBundle)
					}
					res, err := Verify(context.Background(), d, []Key{k.key})
					wantErr(t, err, tc.wantErr)
					if err == nil && res.Format != FormatBundle {
						t.Errorf("format %v", res.Format)
					}
				})
			}
		})
	}
}
