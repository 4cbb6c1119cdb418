package cosign

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

const testPassword = "correct horse battery staple"

// keyPair is generated once: the scrypt key derivation is slow under -race.
var keyPair = sync.OnceValues(func() ([2][]byte, error) {
	priv, pub, err := GenerateKeyPair([]byte(testPassword))
	return [2][]byte{priv, pub}, err
})

func testKeyPair(t *testing.T) (priv, pub []byte) {
	t.Helper()
	kp, err := keyPair()
	if err != nil {
		t.Fatalf("GenerateKeyPair: %v", err)
	}
	return kp[0], kp[1]
}

func password(p string) func() ([]byte, error) {
	return func() ([]byte, error) { return []byte(p), nil }
}

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestGenerateKeyPair(t *testing.T) {
	priv, pub := testKeyPair(t)
	if p, _ := pem.Decode(priv); p == nil || p.Type != cosign.SigstorePrivateKeyPemType {
		t.Errorf("private key PEM: %q", firstLine(priv))
	}
	if p, _ := pem.Decode(pub); p == nil || p.Type != "PUBLIC KEY" {
		t.Errorf("public key PEM: %q", firstLine(pub))
	}
	if bytes.Contains(priv, []byte(testPassword)) {
		t.Error("private key PEM contains the password")
	}
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}

// TestLoadPrivateKey loads keys from files and env://VAR and signs with them
// (the signatures verify with the matching public key).
func TestLoadPrivateKey(t *testing.T) {
	priv, pub := testKeyPair(t)
	// The older COSIGN label is the same encryption with another PEM type.
	blk, _ := pem.Decode(priv)
	legacyPriv := pem.EncodeToMemory(&pem.Block{Type: cosign.CosignPrivateKeyPemType, Bytes: blk.Bytes})

	privFile := writeFile(t, "cosign.key", priv)
	legacyFile := writeFile(t, "legacy.key", legacyPriv)
	notPEM := writeFile(t, "garbage.key", []byte("not a key"))
	wrongType := writeFile(t, "pub-as-priv.key", pub)
	t.Setenv("BERTH_TEST_COSIGN_KEY", string(priv))
	t.Setenv("BERTH_TEST_EMPTY", "")

	tests := []struct {
		name     string
		ref      string
		password func() ([]byte, error)
		wantErr  error // sentinel; errAny means some other error
		check    func(t *testing.T, err error)
	}{
		{name: "file", ref: privFile, password: password(testPassword)},
		{name: "env", ref: "env://BERTH_TEST_COSIGN_KEY", password: password(testPassword)},
		{name: "COSIGN PEM type", ref: legacyFile, password: password(testPassword)},
		{name: "wrong password", ref: privFile, password: password("wrong"), wantErr: ErrInvalidKey},
		{name: "no password", ref: privFile, password: nil, wantErr: ErrInvalidKey},
		{name: "not PEM", ref: notPEM, password: password(testPassword), wantErr: ErrInvalidKey},
		{name: "public key", ref: wrongType, password: password(testPassword), wantErr: ErrInvalidKey,
			check: func(t *testing.T, err error) {
				if !strings.Contains(err.Error(), `"PUBLIC KEY"`) {
					t.Errorf("message does not name the PEM type: %v", err)
				}
			}},
		{name: "missing file", ref: filepath.Join(t.TempDir(), "nope.key"), password: password(testPassword), wantErr: errAny,
			check: func(t *testing.T, err error) {
				if !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("missing file: %v, want fs.ErrNotExist", err)
				}
			}},
		{name: "unset env", ref: "env://BERTH_TEST_UNSET_KEY", password: password(testPassword), wantErr: errAny},
		{name: "empty env", ref: "env://BERTH_TEST_EMPTY", password: password(testPassword), wantErr: errAny},
		{name: "password func fails", ref: privFile, wantErr: errAny,
			password: func() ([]byte, error) { return nil, errors.New("no tty") },
			check: func(t *testing.T, err error) {
				if !strings.Contains(err.Error(), "no tty") {
					t.Errorf("password error lost: %v", err)
				}
			}},
	}
	pubKeys, err := LoadPublicKeys(writeFile(t, "cosign.pub", pub))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sv, err := LoadPrivateKey(tc.ref, tc.password)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("LoadPrivateKey: %v", err)
			case tc.wantErr == errAny:
				if err == nil {
					t.Fatal("LoadPrivateKey succeeded")
				}
				if errors.Is(err, ErrInvalidKey) {
					t.Errorf("%v should not be ErrInvalidKey", err)
				}
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("LoadPrivateKey: %v, want %v", err, tc.wantErr)
			}
			if tc.check != nil {
				tc.check(t, err)
			}
			if err != nil {
				t.Logf("error: %v", err)
				return
			}
			// The loaded key signs what the public key verifies.
			host := startRegistry(t, false)
			d, _ := pushImage(t, host)
			if err := Sign(context.Background(), d, sv, FormatBundle); err != nil {
				t.Fatal(err)
			}
			if _, err := Verify(context.Background(), d, pubKeys); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// errAny marks a test case expecting an error that is not a sentinel.
var errAny = errors.New("any error")

func TestLoadPublicKeys(t *testing.T) {
	_, pub := testKeyPair(t)
	pubFile := writeFile(t, "cosign.pub", pub)
	t.Setenv("BERTH_TEST_COSIGN_PUB", string(pub))
	bad := writeFile(t, "bad.pub", []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"))

	keys, err := LoadPublicKeys(pubFile, "env://BERTH_TEST_COSIGN_PUB")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].Name != pubFile || keys[1].String() != "env://BERTH_TEST_COSIGN_PUB" {
		t.Errorf("keys = %v", keys)
	}
	if _, err := LoadPublicKeys(pubFile, bad); !errors.Is(err, ErrInvalidKey) || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad key: %v, want ErrInvalidKey naming %s", err, bad)
	}
	if _, err := LoadPublicKeys(filepath.Join(t.TempDir(), "missing.pub")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing key: %v", err)
	}
	if _, err := ParsePublicKey("x", []byte("junk")); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("junk: %v", err)
	}
}

// TestKeyTypes: keys cosign can hold besides the default P-256 sign and
// verify in both formats, with the verifier defaults ParsePublicKey picks
// matching the signer defaults of cosign.LoadPrivateKey (ED25519ph, hash by
// curve).
func TestKeyTypes(t *testing.T) {
	host := startRegistry(t, false)
	for _, tc := range []struct {
		name string
		gen  func() (crypto.Signer, error)
	}{
		{"ecdsa-p384", func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P384(), rand.Reader) }},
		{"ed25519", func() (crypto.Signer, error) { _, k, err := ed25519.GenerateKey(rand.Reader); return k, err }},
		{"rsa-2048", func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			priv, err := tc.gen()
			if err != nil {
				t.Fatal(err)
			}
			sv, err := signature.LoadDefaultSignerVerifier(priv, *cosign.GetDefaultLoadOptions(nil)...)
			if err != nil {
				t.Fatal(err)
			}
			pubPEM, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
			if err != nil {
				t.Fatal(err)
			}
			k, err := ParsePublicKey(tc.name+".pub", pubPEM)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range formats {
				d, _ := pushImage(t, host)
				if err := Sign(context.Background(), d, sv, f); err != nil {
					t.Fatalf("%v: %v", f, err)
				}
				if res, err := Verify(context.Background(), d, []Key{k}); err != nil || res.Format != f {
					t.Fatalf("%v: %+v, %v", f, res, err)
				}
			}
		})
	}
}
