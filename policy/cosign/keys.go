package cosign

import (
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// EnvPrefix marks a key reference that names an environment variable holding
// the PEM text instead of a file path, as in cosign: "env://COSIGN_KEY".
const EnvPrefix = "env://"

// Key is a public key trusted to verify signatures. Name is where it came
// from (a path or env://VAR) and is used in messages and Result.Key.
type Key struct {
	// Name identifies the key's source for humans.
	Name string

	verifier signature.Verifier
}

var _ fmt.Stringer = (*Key)(nil)

// String returns the key's source name.
func (k Key) String() string { return k.Name }

// ParsePublicKey parses a PEM-encoded public key (as written by
// `cosign generate-key-pair` or GenerateKeyPair) and labels it name.
func ParsePublicKey(name string, pemBytes []byte) (Key, error) {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pemBytes)
	if err != nil {
		return Key{}, fmt.Errorf("%w: public key %s: %v", ErrInvalidKey, name, err)
	}
	// Same defaults as cosign.LoadPrivateKey uses for the signer (ED25519ph
	// for ed25519 keys, hash by key size otherwise), so what we sign verifies.
	v, err := signature.LoadDefaultVerifier(pub, *cosign.GetDefaultLoadOptions(nil)...)
	if err != nil {
		return Key{}, fmt.Errorf("%w: public key %s: %v", ErrInvalidKey, name, err)
	}
	return Key{Name: name, verifier: v}, nil
}

// LoadPublicKeys reads PEM public keys from file paths or env://VAR
// references. Every reference must load; the first failure is returned.
func LoadPublicKeys(refs ...string) ([]Key, error) {
	keys := make([]Key, 0, len(refs))
	for _, ref := range refs {
		b, err := readKeyRef(ref)
		if err != nil {
			return nil, err
		}
		k, err := ParsePublicKey(ref, b)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// LoadPrivateKey loads a cosign encrypted private key ("ENCRYPTED SIGSTORE
// PRIVATE KEY" or "ENCRYPTED COSIGN PRIVATE KEY" PEM) from a file path or an
// env://VAR reference. password is called once to get the passphrase
// (typically from COSIGN_PASSWORD); a nil func means an empty passphrase.
// A key that is not such a PEM, or cannot be decrypted, yields ErrInvalidKey.
func LoadPrivateKey(ref string, password func() ([]byte, error)) (signature.SignerVerifier, error) {
	b, err := readKeyRef(ref)
	if err != nil {
		return nil, err
	}
	p, _ := pem.Decode(b)
	if p == nil {
		return nil, fmt.Errorf("%w: private key %s: not PEM", ErrInvalidKey, ref)
	}
	if p.Type != cosign.SigstorePrivateKeyPemType && p.Type != cosign.CosignPrivateKeyPemType {
		return nil, fmt.Errorf("%w: private key %s: PEM type %q, want %q or %q (create one with `cosign generate-key-pair`)",
			ErrInvalidKey, ref, p.Type, cosign.SigstorePrivateKeyPemType, cosign.CosignPrivateKeyPemType)
	}
	pass := []byte{}
	if password != nil {
		pass, err = password()
		if err != nil {
			return nil, fmt.Errorf("reading password for private key %s: %w", ref, err)
		}
	}
	sv, err := cosign.LoadPrivateKey(b, pass, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: private key %s: %v (wrong password?)", ErrInvalidKey, ref, err)
	}
	return sv, nil
}

// GenerateKeyPair creates an ECDSA P-256 key pair in cosign's formats: the
// private key encrypted with password ("ENCRYPTED SIGSTORE PRIVATE KEY" PEM)
// and the PEM public key.
func GenerateKeyPair(password []byte) (privPEM, pubPEM []byte, err error) {
	kb, err := cosign.GenerateKeyPair(func(bool) ([]byte, error) {
		return append([]byte{}, password...), nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("generating key pair: %w", err)
	}
	return kb.PrivateBytes, kb.PublicBytes, nil
}

// readKeyRef returns the bytes behind a key reference: env://VAR or a path.
func readKeyRef(ref string) ([]byte, error) {
	if v, ok := strings.CutPrefix(ref, EnvPrefix); ok {
		if v == "" {
			return nil, fmt.Errorf("key reference %q: empty environment variable name", ref)
		}
		s, ok := os.LookupEnv(v)
		if !ok || s == "" {
			return nil, fmt.Errorf("key reference %s: environment variable %s is not set", ref, v)
		}
		return []byte(s), nil
	}
	b, err := os.ReadFile(filepath.Clean(ref))
	if err != nil {
		return nil, fmt.Errorf("reading key %s: %w", ref, err)
	}
	return b, nil
}

// keyNames lists key names for messages.
func keyNames(keys []Key) string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.Name
	}
	return strings.Join(names, ", ")
}
