package signtest

import (
	"bytes"
	"crypto"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// TestKeyVerifies: what Signer signs verifies with PublicPEM, and not with
// another key's.
func TestKeyVerifies(t *testing.T) {
	k, other := NewKey(t), NewKey(t)
	msg := []byte("release")
	sig, err := k.Signer.SignMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		pem  []byte
		ok   bool
	}{{"own key", k.PublicPEM, true}, {"other key", other.PublicPEM, false}} {
		pub, err := cryptoutils.UnmarshalPEMToPublicKey(tc.pem)
		if err != nil {
			t.Fatal(err)
		}
		v, err := signature.LoadVerifier(pub, crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(msg)); (err == nil) != tc.ok {
			t.Errorf("%s: verify = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

// TestPushRandom: the digest PushRandom returns is what the registry
// serves for the tag, with and without the referrers API.
func TestPushRandom(t *testing.T) {
	for _, referrers := range []bool{true, false} {
		host := Registry(t, referrers)
		tag, err := name.NewTag(host + "/signtest/app:v1")
		if err != nil {
			t.Fatal(err)
		}
		d, img := PushRandom(t, tag)
		desc, err := remote.Head(tag)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := img.Digest()
		if desc.Digest != want || d.DigestStr() != want.String() || d.Context() != tag.Context() {
			t.Errorf("referrers %v: pushed %s, registry has %s, image is %s", referrers, d, desc.Digest, want)
		}
	}
}
