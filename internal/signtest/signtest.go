// Package signtest holds what tests that sign and verify releases need
// over and over: a signing key with its public key, go-containerregistry's
// in-process registry, and an image pushed to it.
//
// It imports no berth package, so that policy/cosign's own (in-package)
// tests can use it as well as the tests of the packages above policy/cosign;
// signing itself (cosign.Sign) and parsing the public key
// (cosign.ParsePublicKey) stay with the callers for that reason. Only tests
// import it (like internal/keylesstest).
package signtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// Key is a signing key and its public key.
type Key struct {
	Signer signature.SignerVerifier
	// PublicPEM is the public key as PEM, what cosign.ParsePublicKey reads.
	PublicPEM []byte
}

// NewKey makes a fresh ECDSA P-256 key (cosign's default kind).
func NewKey(t testing.TB) Key {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return KeyOf(t, priv)
}

// KeyOf is the Key of priv.
func KeyOf(t testing.TB, priv crypto.Signer) Key {
	t.Helper()
	sv, err := signature.LoadDefaultSignerVerifier(priv)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return Key{Signer: sv, PublicPEM: pub}
}

// Registry serves go-containerregistry's in-memory registry, with or
// without the OCI 1.1 referrers API, until the test ends, and returns its
// "127.0.0.1:PORT" host (plain HTTP, which go-containerregistry picks for
// loopback addresses).
func Registry(t testing.TB, referrers bool) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(
		registry.WithReferrersSupport(referrers),
		registry.Logger(log.New(io.Discard, "", 0)),
	))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// Push pushes img as tag and returns its digest.
func Push(t testing.TB, tag name.Tag, img v1.Image, ropts ...remote.Option) name.Digest {
	t.Helper()
	if err := remote.Write(tag, img, ropts...); err != nil {
		t.Fatalf("push %s: %v", tag, err)
	}
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return tag.Context().Digest(h.String())
}

// PushRandom pushes a small random image (one 256-byte layer) as tag and
// returns its digest and the image.
func PushRandom(t testing.TB, tag name.Tag, ropts ...remote.Option) (name.Digest, v1.Image) {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	return Push(t, tag, img, ropts...), img
}
