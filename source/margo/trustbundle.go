package margo

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxTrustBundleSize caps a SPIFFE bundle served by the MIS (and its
// cache file): a bundle holds a few anchors, far below this.
const MaxTrustBundleSize = 1 << 20

// Bounds of the refresh interval taken from spiffe_refresh_hint.
const (
	minRefreshHint = 30 * time.Second
	maxRefreshHint = 24 * time.Hour
)

// TrustBundle is a parsed SPIFFE bundle (JWK Set): its x509-svid anchors
// only (jwt-svid keys and keys of an unknown use are ignored).
type TrustBundle struct {
	// Sequence is spiffe_sequence, 0 when absent.
	Sequence uint64
	// RefreshHint is spiffe_refresh_hint, 0 when absent.
	RefreshHint time.Duration
	// Anchors are the X.509 authorities of the x509-svid keys.
	Anchors []*x509.Certificate
}

type jwkSet struct {
	Keys        []json.RawMessage `json:"keys"`
	Sequence    *uint64           `json:"spiffe_sequence"`
	RefreshHint *int64            `json:"spiffe_refresh_hint"`
}

// jwk is a JSON Web Key of RFC 7517/7518 as a SPIFFE bundle carries it;
// members outside these are refused.
type jwk struct {
	Kty     string   `json:"kty"`
	Use     string   `json:"use"`
	Kid     string   `json:"kid"`
	Alg     string   `json:"alg"`
	Crv     string   `json:"crv"`
	X       string   `json:"x"`
	Y       string   `json:"y"`
	N       string   `json:"n"`
	E       string   `json:"e"`
	X5c     []string `json:"x5c"`
	X5t     string   `json:"x5t"`
	X5tS256 string   `json:"x5t#S256"`
}

// decodeStrict decodes exactly one JSON value into v, refusing unknown
// members and trailing data.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

// ParseTrustBundle parses a SPIFFE bundle (the JWK Set GET <trustBundleUri>
// answers). It is strict: one JSON object of at most MaxTrustBundleSize
// bytes, no unknown members; every x509-svid key has exactly one x5c
// certificate, a CA, whose public key is the key's. A bundle without
// x509-svid anchors is refused (fail closed): ErrEmptyTrustBundle.
func ParseTrustBundle(data []byte) (*TrustBundle, error) {
	if len(data) > MaxTrustBundleSize {
		return nil, fmt.Errorf("%w: trust bundle of %d bytes, the cap is %d", ErrTooLarge, len(data), MaxTrustBundleSize)
	}
	var set jwkSet
	if err := decodeStrict(data, &set); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidTrustBundle, err)
	}
	if set.Keys == nil {
		return nil, fmt.Errorf("%w: no keys member", ErrInvalidTrustBundle)
	}
	tb := &TrustBundle{}
	if set.Sequence != nil {
		tb.Sequence = *set.Sequence
	}
	if h := set.RefreshHint; h != nil {
		if *h < 0 || *h > int64(maxRefreshHint/time.Second)*365 {
			return nil, fmt.Errorf("%w: spiffe_refresh_hint %d is out of range", ErrInvalidTrustBundle, *h)
		}
		tb.RefreshHint = time.Duration(*h) * time.Second
	}
	for i, raw := range set.Keys {
		var k jwk
		if err := decodeStrict(raw, &k); err != nil {
			return nil, fmt.Errorf("%w: keys[%d]: %v", ErrInvalidTrustBundle, i, err)
		}
		if k.Use != "x509-svid" {
			continue // jwt-svid keys (and unknown uses) do not anchor X.509-SVIDs
		}
		cert, err := k.anchor()
		if err != nil {
			return nil, fmt.Errorf("%w: keys[%d]: %v", ErrInvalidTrustBundle, i, err)
		}
		tb.Anchors = append(tb.Anchors, cert)
	}
	if len(tb.Anchors) == 0 {
		return nil, ErrEmptyTrustBundle
	}
	return tb, nil
}

// anchor checks an x509-svid key and returns its certificate.
func (k *jwk) anchor() (*x509.Certificate, error) {
	if len(k.X5c) != 1 {
		return nil, fmt.Errorf("an x509-svid key must carry exactly one x5c certificate, got %d", len(k.X5c))
	}
	der, err := base64.StdEncoding.DecodeString(k.X5c[0])
	if err != nil {
		return nil, fmt.Errorf("x5c: not base64: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("x5c: %v", err)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, errors.New("x5c: the certificate is not a CA; a trust anchor must be one")
	}
	switch pub := cert.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Kty != "EC" || k.Crv != pub.Curve.Params().Name || !b64Equal(k.X, pub.X) || !b64Equal(k.Y, pub.Y) {
			return nil, errors.New("the key's kty/crv/x/y are not the public key of its x5c certificate")
		}
	case *rsa.PublicKey:
		if k.Kty != "RSA" || !b64Equal(k.N, pub.N) || !b64Equal(k.E, big.NewInt(int64(pub.E))) {
			return nil, errors.New("the key's kty/n/e are not the public key of its x5c certificate")
		}
	default:
		return nil, fmt.Errorf("x5c: unsupported public key %T", pub)
	}
	return cert, nil
}

// b64Equal reports whether s is the base64url (unpadded) big-endian
// encoding of n, leading zeros allowed as RFC 7518 pads coordinates.
func b64Equal(s string, n *big.Int) bool {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && len(b) > 0 && new(big.Int).SetBytes(b).Cmp(n) == 0
}

// x509Bundle is the trust bundle of td made of the anchors.
func (tb *TrustBundle) x509Bundle(td spiffeid.TrustDomain) *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(td, tb.Anchors)
}

// bundleCache is the file the accepted bundle is kept in, for offline
// validation and restarts.
type bundleCache struct {
	TrustDomain string          `json:"trustDomain"`
	URI         string          `json:"uri"`
	ETag        string          `json:"etag,omitempty"`
	Fetched     time.Time       `json:"fetched"`
	Bundle      json.RawMessage `json:"bundle"`
}

// readBundleCache reads the cache at path; (nil, nil) when there is none.
func readBundleCache(path string, td spiffeid.TrustDomain) (*bundleCache, *TrustBundle, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 2*MaxTrustBundleSize+1))
	if err != nil {
		return nil, nil, err
	}
	if len(data) > 2*MaxTrustBundleSize {
		return nil, nil, fmt.Errorf("%w: trust bundle cache %s is over %d bytes", ErrTooLarge, path, 2*MaxTrustBundleSize)
	}
	var c bundleCache
	if err := decodeStrict(data, &c); err != nil {
		return nil, nil, fmt.Errorf("trust bundle cache %s: %v (remove it to start again from identity.trustBundle)", path, err)
	}
	if c.TrustDomain != td.Name() {
		return nil, nil, fmt.Errorf("trust bundle cache %s is for the trust domain %q, the device's SVID is of %q (remove it)", path, c.TrustDomain, td.Name())
	}
	tb, err := ParseTrustBundle(c.Bundle)
	if err != nil {
		return nil, nil, fmt.Errorf("trust bundle cache %s: %w", path, err)
	}
	return &c, tb, nil
}

// write stores the cache atomically (temporary file, fsync, rename, fsync
// of the folder).
func (c *bundleCache) write(path string) error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(path, data, 0o600)
}
