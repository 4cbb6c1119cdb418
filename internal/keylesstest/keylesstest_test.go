package keylesstest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

const (
	identity = "https://github.com/acme/fleet/.github/workflows/push.yml@refs/heads/main"
	issuer   = "https://token.actions.githubusercontent.com"
)

func testDigest(t *testing.T) (string, []byte) {
	t.Helper()
	sum := sha256.Sum256([]byte(t.Name()))
	return "sha256:" + hex.EncodeToString(sum[:]), sum[:]
}

// TestBundleVerifies checks the bundle with sigstore-go directly, against
// the trusted root in memory and after a trip through trusted_root.json.
func TestBundleVerifies(t *testing.T) {
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	digest, raw := testDigest(t)
	bj, err := s.SignBundle(digest, identity, issuer)
	if err != nil {
		t.Fatal(err)
	}
	b := &sgbundle.Bundle{}
	if err := b.UnmarshalJSON(bj); err != nil {
		t.Fatal(err)
	}
	if !b.MinVersion("v0.3") || b.GetDsseEnvelope() == nil {
		t.Fatalf("not a v0.3 DSSE bundle: %s", bj)
	}

	tr, err := s.TrustedRoot()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "trusted_root.json")
	if err := s.WriteTrustedRoot(path); err != nil {
		t.Fatal(err)
	}
	loaded, err := root.NewTrustedRootFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded.CTLogs()) != 0 || len(loaded.RekorLogs()) != 1 || len(loaded.TimestampingAuthorities()) != 1 ||
		len(loaded.FulcioCertificateAuthorities()) != 1 {
		t.Errorf("loaded root: %d ctlogs, %d tlogs, %d TSAs, %d CAs", len(loaded.CTLogs()), len(loaded.RekorLogs()),
			len(loaded.TimestampingAuthorities()), len(loaded.FulcioCertificateAuthorities()))
	}

	id, err := verify.NewShortCertificateIdentity("", "^"+issuer+"$", "", "^"+identity+"$")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		tm   root.TrustedMaterial
	}{{"in memory", tr}, {"trusted_root.json", loaded}} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := verify.NewVerifier(tc.tm, verify.WithTransparencyLog(1), verify.WithObserverTimestamps(1), verify.WithSignedTimestamps(1))
			if err != nil {
				t.Fatal(err)
			}
			res, err := v.Verify(b, verify.NewPolicy(verify.WithArtifactDigest("sha256", raw), verify.WithCertificateIdentity(id)))
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Signature.Certificate.SubjectAlternativeName; got != identity {
				t.Errorf("SAN %q", got)
			}
			if pt := res.Statement.GetPredicateType(); pt != CosignSignPredicateType {
				t.Errorf("predicate type %q", pt)
			}
		})
	}

	other, err := New()
	if err != nil {
		t.Fatal(err)
	}
	otr, err := other.TrustedRoot()
	if err != nil {
		t.Fatal(err)
	}
	v, err := verify.NewVerifier(otr, verify.WithTransparencyLog(1), verify.WithObserverTimestamps(1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(b, verify.NewPolicy(verify.WithArtifactDigest("sha256", raw), verify.WithCertificateIdentity(id))); err == nil {
		t.Error("bundle verified against another virtual sigstore's root")
	}
}

func TestSignLegacy(t *testing.T) {
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	digest, _ := testDigest(t)
	d, err := name.NewDigest("registry.example/acme/app@" + digest)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.SignLegacy(d, identity, issuer)
	if err != nil {
		t.Fatal(err)
	}
	var ss struct {
		Critical struct {
			Image struct {
				Digest string `json:"docker-manifest-digest"`
			} `json:"image"`
		} `json:"critical"`
	}
	if err := json.Unmarshal(sig.Payload, &ss); err != nil || ss.Critical.Image.Digest != digest {
		t.Errorf("payload %s: %v", sig.Payload, err)
	}
	certs, err := cryptoutils.UnmarshalCertificatesFromPEM(sig.Cert)
	if err != nil || len(certs) != 1 || len(certs[0].EmailAddresses) != 1 || certs[0].EmailAddresses[0] != identity {
		t.Errorf("certificate: %v", err)
	}
	chain, err := cryptoutils.UnmarshalCertificatesFromPEM(sig.Chain)
	if err != nil || len(chain) != 2 {
		t.Errorf("chain: %d certs, %v", len(chain), err)
	}
	if len(sig.Bundle.SignedEntryTimestamp) == 0 || sig.Bundle.Payload.LogID == "" {
		t.Errorf("rekor bundle %+v", sig.Bundle)
	}
}
