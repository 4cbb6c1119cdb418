package cosign

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const testPredicateType = "https://berth.dev/test/v1"

// attestationBundles returns the bundles of d's referrers annotated with
// predicateType, as stored.
func attestationBundles(t *testing.T, d name.Digest, predicateType string) [][]byte {
	t.Helper()
	idx, err := remote.Referrers(d)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, desc := range im.Manifests {
		if desc.Annotations[bundleAnnotationPredicate] != predicateType {
			continue
		}
		got, err := remote.Get(d.Context().Digest(desc.Digest.String()))
		if err != nil {
			t.Fatal(err)
		}
		var m v1.Manifest
		if err := json.Unmarshal(got.Manifest, &m); err != nil {
			t.Fatal(err)
		}
		l, err := remote.Layer(d.Context().Digest(m.Layers[0].Digest.String()))
		if err != nil {
			t.Fatal(err)
		}
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestAttest signs attestations with a key and keyless, on registries with
// and without the referrers API, and checks that exactly the right ones
// verify, that a copied one is told apart, and that release signatures do
// not see them.
func TestAttest(t *testing.T) {
	ctx := context.Background()
	for _, mode := range registryModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			host := startRegistry(t, mode.referrers)
			d, _ := pushImage(t, host)
			other, _ := pushImage(t, host)
			k, stranger := newTestKey(t, "ci.pub"), newTestKey(t, "stranger.pub")

			pred := []byte(`{"action":"pause","note":"x"}`)
			if err := Attest(ctx, d, k.sv, testPredicateType, pred); err != nil {
				t.Fatalf("Attest: %v", err)
			}
			// The release is not signed: its attestation is no signature.
			if _, err := Verify(ctx, d, []Key{k.key}); !errors.Is(err, ErrNoSignature) {
				t.Errorf("Verify of an unsigned release with an attestation: %v, want ErrNoSignature", err)
			}
			mustSign(t, d, k, FormatBundle)
			if _, err := Verify(ctx, d, []Key{k.key}); err != nil {
				t.Errorf("Verify with an attestation beside the signature: %v", err)
			}

			bundles := attestationBundles(t, d, testPredicateType)
			if len(bundles) != 1 {
				t.Fatalf("%d attestations stored, want 1", len(bundles))
			}
			v, err := NewAttestationVerifier(Policy{Keys: []Key{stranger.key, k.key}})
			if err != nil {
				t.Fatal(err)
			}
			a, err := v.Verify(bundles[0], d, testPredicateType)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			var got map[string]string
			if err := json.Unmarshal(a.Predicate, &got); err != nil || got["action"] != "pause" || got["note"] != "x" || a.Key != "ci.pub" {
				t.Errorf("attestation = %s by %s (%v)", a.Predicate, a.Signer(), err)
			}

			vs, _ := NewAttestationVerifier(Policy{Keys: []Key{stranger.key}})
			if _, err := vs.Verify(bundles[0], d, testPredicateType); !errors.Is(err, ErrKeyMismatch) {
				t.Errorf("another key: %v, want ErrKeyMismatch", err)
			}
			if _, err := v.Verify(bundles[0], other, testPredicateType); !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "copied") {
				t.Errorf("copied to another digest: %v, want ErrDigestMismatch", err)
			}
			if _, err := v.Verify(bundles[0], d, "https://berth.dev/other/v1"); err == nil || errors.Is(err, ErrKeyMismatch) {
				t.Errorf("another predicate type: %v, want a plain error", err)
			}
			if _, err := v.Verify([]byte(`{"mediaType": "nope"}`), d, testPredicateType); err == nil {
				t.Error("garbage verified")
			}

			// Keyless: signed elsewhere, attached, verified offline.
			s := newSigstore(t)
			payload, err := StatementPayload(d, testPredicateType, []byte(`{"action":"abort"}`))
			if err != nil {
				t.Fatal(err)
			}
			bj, err := s.SignStatement(payload, ghSubject, ghIssuer)
			if err != nil {
				t.Fatal(err)
			}
			if err := AttachAttestation(ctx, other, bj, testPredicateType); err == nil {
				t.Error("a statement about d attached to another digest")
			}
			if err := AttachAttestation(ctx, d, bj, "https://berth.dev/other/v1"); err == nil {
				t.Error("a statement attached under another predicate type")
			}
			if err := AttachAttestation(ctx, d, bj, testPredicateType); err != nil {
				t.Fatalf("AttachAttestation: %v", err)
			}
			if n := len(attestationBundles(t, d, testPredicateType)); n != 2 {
				t.Fatalf("%d attestations stored, want 2", n)
			}
			kv, err := NewAttestationVerifier(Policy{TrustedRoot: loadRoot(t, s), Identities: []Identity{fleetIdentity}})
			if err != nil {
				t.Fatal(err)
			}
			a, err = kv.Verify(bj, d, testPredicateType)
			if err != nil || string(a.Predicate) != `{"action":"abort"}` || a.Identity != ghSubject {
				t.Errorf("keyless: %+v, %v", a, err)
			}
			if _, err := kv.Verify(bj, other, testPredicateType); !errors.Is(err, ErrDigestMismatch) {
				t.Errorf("keyless copied: %v, want ErrDigestMismatch", err)
			}
			iv, _ := NewAttestationVerifier(Policy{TrustedRoot: loadRoot(t, s), Identities: []Identity{{Issuer: ".*", Subject: "^someone-else$"}}})
			if _, err := iv.Verify(bj, d, testPredicateType); !errors.Is(err, ErrIdentityMismatch) {
				t.Errorf("keyless, other identity: %v, want ErrIdentityMismatch", err)
			}
			ov, _ := NewAttestationVerifier(Policy{TrustedRoot: loadRoot(t, newSigstore(t)), Identities: []Identity{fleetIdentity}})
			if _, err := ov.Verify(bj, d, testPredicateType); !errors.Is(err, ErrKeyMismatch) {
				t.Errorf("keyless, another Sigstore: %v, want ErrKeyMismatch", err)
			}
		})
	}
}

func TestStatementPayload(t *testing.T) {
	d, _ := name.NewDigest("example.com/a@sha256:" + strings.Repeat("ab", 32))
	p, err := StatementPayload(d, testPredicateType, []byte(`{"a":"b"}`))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Type          string `json:"_type"`
		PredicateType string `json:"predicateType"`
		Subject       []struct {
			Digest map[string]string `json:"digest"`
		} `json:"subject"`
		Predicate map[string]string `json:"predicate"`
	}
	if err := json.Unmarshal(p, &st); err != nil || st.Type != "https://in-toto.io/Statement/v1" || st.PredicateType != testPredicateType ||
		len(st.Subject) != 1 || st.Subject[0].Digest["sha256"] != strings.Repeat("ab", 32) || st.Predicate["a"] != "b" {
		t.Errorf("payload %s (%v)", p, err)
	}
	for _, bad := range []string{`[1]`, `"x"`, `{`} {
		if _, err := StatementPayload(d, testPredicateType, []byte(bad)); err == nil {
			t.Errorf("predicate %s accepted", bad)
		}
	}
}
