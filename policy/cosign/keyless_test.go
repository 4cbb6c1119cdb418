package cosign

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	ocistatic "github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/sigstore-go/pkg/root"

	"github.com/berth-dev/berth/internal/keylesstest"
)

const (
	ghIssuer   = "https://token.actions.githubusercontent.com"
	ghSubject  = "https://github.com/acme/fleet/.github/workflows/push.yml@refs/heads/main"
	gooIssuer  = "https://accounts.google.com"
	evilSubjct = "https://github.com/evil/fleet/.github/workflows/push.yml@refs/heads/main"
)

// fleetIdentity is the identity the keyless tests allow, anchored.
var fleetIdentity = Identity{
	Issuer:  `^https://token\.actions\.githubusercontent\.com$`,
	Subject: `^https://github\.com/acme/fleet/\.github/workflows/push\.yml@refs/heads/main$`,
}

func newSigstore(t *testing.T) *keylesstest.Sigstore {
	t.Helper()
	s, err := keylesstest.New()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// loadRoot writes s's trusted_root.json and loads it back with
// LoadTrustedRoot, as a device does.
func loadRoot(t *testing.T, s *keylesstest.Sigstore) root.TrustedMaterial {
	t.Helper()
	path := filepath.Join(t.TempDir(), "trusted_root.json")
	if err := s.WriteTrustedRoot(path); err != nil {
		t.Fatal(err)
	}
	tm, err := LoadTrustedRoot(path)
	if err != nil {
		t.Fatalf("LoadTrustedRoot: %v", err)
	}
	return tm
}

// signKeyless signs d keyless as subject/issuer in format f and stores the
// signature where cosign would.
func signKeyless(t *testing.T, s *keylesstest.Sigstore, d name.Digest, f Format, subject, issuer string) {
	t.Helper()
	switch f {
	case FormatBundle:
		bj, err := s.SignBundle(d.DigestStr(), subject, issuer)
		if err != nil {
			t.Fatal(err)
		}
		if err := AttachBundle(context.Background(), d, bj); err != nil {
			t.Fatalf("AttachBundle: %v", err)
		}
	case FormatLegacy:
		signKeylessLegacy(t, s, d, subject, issuer, true)
	}
}

// signKeylessLegacy stores a cosign v2 keyless .sig signature, with or
// without its RFC 3161 timestamp annotation.
func signKeylessLegacy(t *testing.T, s *keylesstest.Sigstore, d name.Digest, subject, issuer string, withTimestamp bool) {
	t.Helper()
	ls, err := s.SignLegacy(d, subject, issuer)
	if err != nil {
		t.Fatal(err)
	}
	opts := []ocistatic.Option{ocistatic.WithCertChain(ls.Cert, ls.Chain), ocistatic.WithBundle(ls.Bundle)}
	if withTimestamp {
		opts = append(opts, ocistatic.WithRFC3161Timestamp(ls.Timestamp))
	}
	sig, err := ocistatic.NewSignature(ls.Payload, ls.Signature, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := appendLegacySignature(d, sig, nil, remoteOptions(context.Background(), nil)); err != nil {
		t.Fatal(err)
	}
}

// keylessEnv is what a TestKeylessVerify case sets up against.
type keylessEnv struct {
	host   string
	format Format
	s      *keylesstest.Sigstore // the trusted virtual Sigstore
	tm     root.TrustedMaterial  // its trusted_root.json, loaded
	d      name.Digest
	img    v1.Image
}

func (e *keylessEnv) policy(ids ...Identity) Policy {
	if len(ids) == 0 {
		ids = []Identity{fleetIdentity}
	}
	return Policy{TrustedRoot: e.tm, Identities: ids}
}

func TestKeylessVerify(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, e *keylessEnv) (name.Digest, Policy)
		wantErr error
		wantKey string // Result.Key on success ("" for keyless)
		wantMsg []string
	}{
		{
			name: "allowed identity verifies",
			setup: func(t *testing.T, e *keylessEnv) (name.Digest, Policy) {
				signKeyless(t, e.s, e.d, e.format, ghSubject, ghIssuer)
				return e.d, e.policy()
			},
		},
		{
			name: "second allowed identity verifies",
			setup: func(t *testing.T, e *keylessEnv) (name.Digest, Policy) {
				signKeyless(t, e.s, e.d, e.format, ghSubject, ghIssuer)
				return e.d, e.policy(Identity{Issuer: "^" + gooIssuer + "$", Subject: `^ops@acme\.example$`}, fleetIdentity)
			},
		},
		{
			name: "unsigned",
			setup: func(t *testing.T, e *keylessEnv) (name.Digest, Policy) {
				return e.d, e.policy()
			},
			wantErr: ErrNoSignature,
		},
		{
			name: "wrong issuer",
			setup: func(t *testing.T, e *keylessEnv) (name.Digest, Policy) {
				signKeyless(t, e.s, e.d, e.format, ghSubject, gooIssuer)
				return e.d, e.policy()
			},
			wantErr: ErrIdentityMismatch,
			wantMsg: []string{`subject "` + ghSubject + `"`, `issuer "` + gooIssuer + `"`, "allowed identities:", fleetIdentity.Issuer, fleetIdentity.Subject},
		},
		{
			name: "wrong subject",
			setup: func(t *testing.T, e *keylessEnv) (name.Digest, Policy) {
				signKeyless(t, e.s, e.d, e.format, evilSubjct, ghIssuer)
				return e.d, e.policy()
			},
			wantErr: ErrIdentityMismatch,
			wantMsg: []string{`subject "` + evilSubjct + `"`, `issuer "` + ghIssuer + `"`, fleetIdentity.Subject},
		},
		{
			name: "unanchored subject is the policy's business",
			setup: func(t *testing.T, e *keylessEnv) (name.Digest, Policy) {
				signKeyless(t, e.s, e.d, e.format, evilSubjct+"?acme/fleet", ghIssuer)
				return e.d, e.policy(Identity{Issuer: fleetIdentity.Issuer, Subject: "acme/fleet"})
			},
		},
		{
			name: "another sigstore (untrusted root) is a key mismatch",
			setup: func(t *testing.T, e *keylessEnv) (name.Digest, Policy) {
				signKeyless(t, newSigstore(t), e.d, e.format, ghSubject, ghIssuer)
				return e.d, e.policy()
			},
			wantErr: ErrKeyMismatch,
			wantMsg: []string{"1 signature(s) found", "none chains to the trusted root"},
		},
		{
			name: "signature copied from another artifact",
			setup: func(t *testing.T, e *keylessEnv) (name.Digest, Policy) {
				signKeyless(t, e.s, e.d, e.format, ghSubject, ghIssuer)
				other, _ := pushImage(t, e.host)
				copySignatures(t, e.d, other, e.format)
				return other, e.policy()
			},
			wantErr: ErrDigestMismatch,
			wantMsg: []string{"allowed identity", originalDigest},
		},
		{
			name: "tampered manifest with the original's signature copied",
			setup: func(t *testing.T, e *keylessEnv) (name.Digest, Policy) {
				signKeyless(t, e.s, e.d, e.format, ghSubject, ghIssuer)
				td := tamper(t, e.d, e.img)
				copySignatures(t, e.d, td, e.format)
				return td, e.policy()
			},
			wantErr: ErrDigestMismatch,
		},
		{
			name: "copied signature by another identity is an identity mismatch",
			setup: func(t *testing.T, e *keylessEnv) (name.Digest, Policy) {
				signKeyless(t, e.s, e.d, e.format, evilSubjct, ghIssuer)
				other, _ := pushImage(t, e.host)
				copySignatures(t, e.d, other, e.format)
				return other, e.policy()
			},
			wantErr: ErrIdentityMismatch,
		},
		{
			name: "copied signature does not hide a genuine one",
			setup: func(t *testing.T, e *keylessEnv) (name.Digest, Policy) {
				signKeyless(t, e.s, e.d, e.format, ghSubject, ghIssuer)
				other, _ := pushImage(t, e.host)
				copySignatures(t, e.d, other, e.format)
				signKeyless(t, e.s, other, e.format, ghSubject, ghIssuer)
				return other, e.policy()
			},
		},
		{
			name: "keys and keyless: keyless signature verifies",
			setup: func(t *testing.T, e *keylessEnv) (name.Digest, Policy) {
				signKeyless(t, e.s, e.d, e.format, ghSubject, ghIssuer)
				p := e.policy()
				p.Keys = []Key{newTestKey(t, "k.pub").key}
				return e.d, p
			},
		},
		{
			name: "keys and keyless: key signature verifies",
			setup: func(t *testing.T, e *keylessEnv) (name.Digest, Policy) {
				k := newTestKey(t, "k.pub")
				mustSign(t, e.d, k, e.format)
				p := e.policy()
				p.Keys = []Key{k.key}
				return e.d, p
			},
			wantKey: "k.pub",
		},
		{
			name: "keys and keyless: neither verifies",
			setup: func(t *testing.T, e *keylessEnv) (name.Digest, Policy) {
				mustSign(t, e.d, newTestKey(t, "other.pub"), e.format)
				signKeyless(t, newSigstore(t), e.d, e.format, ghSubject, ghIssuer)
				p := e.policy()
				p.Keys = []Key{newTestKey(t, "k.pub").key}
				return e.d, p
			},
			wantErr: ErrKeyMismatch,
			wantMsg: []string{"2 signature(s) found", "none verifies with key(s) k.pub or chains to the trusted root"},
		},
		{
			name: "keyless signature with a keys-only policy",
			setup: func(t *testing.T, e *keylessEnv) (name.Digest, Policy) {
				signKeyless(t, e.s, e.d, e.format, ghSubject, ghIssuer)
				return e.d, Policy{Keys: []Key{newTestKey(t, "k.pub").key}}
			},
			wantErr: ErrKeyMismatch,
		},
		{
			name: "key signature with a keyless-only policy",
			setup: func(t *testing.T, e *keylessEnv) (name.Digest, Policy) {
				mustSign(t, e.d, newTestKey(t, "k.pub"), e.format)
				return e.d, e.policy()
			},
			wantErr: ErrKeyMismatch,
		},
		{
			name: "a root listing CT logs requires an SCT",
			setup: func(t *testing.T, e *keylessEnv) (name.Digest, Policy) {
				// The VirtualSigstore itself lists a CT log, but its
				// certificates carry no SCT.
				signKeyless(t, e.s, e.d, e.format, ghSubject, ghIssuer)
				return e.d, Policy{TrustedRoot: e.s.VirtualSigstore, Identities: []Identity{fleetIdentity}}
			},
			wantErr: ErrKeyMismatch,
		},
		{
			name: "TSA-only root: the RFC 3161 timestamp dates the signature",
			setup: func(t *testing.T, e *keylessEnv) (name.Digest, Policy) {
				signKeyless(t, e.s, e.d, e.format, ghSubject, ghIssuer)
				return e.d, Policy{TrustedRoot: tsaOnlyRoot(t, e.s), Identities: []Identity{fleetIdentity}}
			},
		},
	}
	for _, mode := range registryModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			host := startRegistry(t, mode.referrers)
			for _, f := range formats {
				t.Run(f.String(), func(t *testing.T) {
					t.Parallel()
					for _, tc := range tests {
						t.Run(tc.name, func(t *testing.T) {
							t.Parallel()
							d, img := pushImage(t, host)
							s := newSigstore(t)
							e := &keylessEnv{host: host, format: f, s: s, tm: loadRoot(t, s), d: d, img: img}
							vd, p := tc.setup(t, e)
							res, err := VerifyPolicy(context.Background(), vd, p)
							wantErr(t, err, tc.wantErr)
							for _, m := range tc.wantMsg {
								if m == originalDigest {
									m = d.DigestStr() // the copied statement names the original
								}
								if !strings.Contains(err.Error(), m) {
									t.Errorf("error %q lacks %q", err, m)
								}
							}
							if err != nil {
								if errors.Is(err, ErrRegistry) {
									t.Errorf("verification failure reported as registry error: %v", err)
								}
								t.Logf("error: %v", err)
								return
							}
							if res.Format != f || res.Digest != vd || res.Key != tc.wantKey {
								t.Errorf("Result %+v, want format %v, digest %s, key %q", res, f, vd, tc.wantKey)
							}
							if tc.wantKey == "" && (res.Issuer != ghIssuer || !strings.HasPrefix(res.Identity, "https://github.com/")) {
								t.Errorf("Result identity %q issuer %q", res.Identity, res.Issuer)
							}
							if tc.wantKey != "" && (res.Identity != "" || res.Issuer != "") {
								t.Errorf("key result with identity: %+v", res)
							}
						})
					}
				})
			}
		})
	}
}

// originalDigest in wantMsg stands for the originally signed digest.
const originalDigest = "<original digest>"

// tsaOnlyRoot is s's trust material without transparency or CT logs.
func tsaOnlyRoot(t *testing.T, s *keylesstest.Sigstore) root.TrustedMaterial {
	t.Helper()
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, s.FulcioCertificateAuthorities(), nil, s.TimestampingAuthorities(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestKeylessLegacyNeedsTimestampWithoutLog: with a TSA-only root a legacy
// keyless signature must carry an RFC 3161 timestamp (cosign would fall
// back to the current time).
func TestKeylessLegacyNeedsTimestampWithoutLog(t *testing.T) {
	host := startRegistry(t, true)
	d, _ := pushImage(t, host)
	s := newSigstore(t)
	signKeylessLegacy(t, s, d, ghSubject, ghIssuer, false)
	p := Policy{TrustedRoot: tsaOnlyRoot(t, s), Identities: []Identity{fleetIdentity}}
	_, err := VerifyPolicy(context.Background(), d, p)
	wantErr(t, err, ErrKeyMismatch)
	if !strings.Contains(err.Error(), "no RFC 3161 timestamp") {
		t.Errorf("message: %v", err)
	}
	// With the log in the root, the Rekor bundle suffices.
	if _, err := VerifyPolicy(context.Background(), d, Policy{TrustedRoot: loadRoot(t, s), Identities: []Identity{fleetIdentity}}); err != nil {
		t.Errorf("with tlog: %v", err)
	}
}

// TestKeylessInMemoryRoot: the root need not come from a file.
func TestKeylessInMemoryRoot(t *testing.T) {
	host := startRegistry(t, false)
	d, _ := pushImage(t, host)
	s := newSigstore(t)
	signKeyless(t, s, d, FormatBundle, ghSubject, ghIssuer)
	tr, err := s.TrustedRoot()
	if err != nil {
		t.Fatal(err)
	}
	res, err := VerifyPolicy(context.Background(), d, Policy{TrustedRoot: tr, Identities: []Identity{fleetIdentity}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Identity != ghSubject || res.Issuer != ghIssuer || res.Format != FormatBundle || res.Key != "" {
		t.Errorf("result %+v", res)
	}
}

// TestKeylessBothFormats: one artifact, a keyless bundle by one identity
// and a keyless .sig by another; each identity finds its own.
func TestKeylessBothFormats(t *testing.T) {
	host := startRegistry(t, true)
	d, _ := pushImage(t, host)
	s := newSigstore(t)
	tm := loadRoot(t, s)
	const other = "https://github.com/acme/fleet/.github/workflows/legacy.yml@refs/heads/main"
	signKeyless(t, s, d, FormatBundle, ghSubject, ghIssuer)
	signKeyless(t, s, d, FormatLegacy, other, ghIssuer)
	for _, tc := range []struct {
		subject string
		want    Format
	}{{ghSubject, FormatBundle}, {other, FormatLegacy}} {
		id := Identity{Issuer: fleetIdentity.Issuer, Subject: "^" + strings.ReplaceAll(tc.subject, ".", `\.`) + "$"}
		res, err := VerifyPolicy(context.Background(), d, Policy{TrustedRoot: tm, Identities: []Identity{id}})
		if err != nil {
			t.Fatalf("%s: %v", tc.subject, err)
		}
		if res.Format != tc.want || res.Identity != tc.subject {
			t.Errorf("%s: %+v", tc.subject, res)
		}
	}
	_, err := VerifyPolicy(context.Background(), d, Policy{TrustedRoot: tm, Identities: []Identity{{Issuer: ".", Subject: "^nobody$"}}})
	wantErr(t, err, ErrIdentityMismatch)
	if !strings.Contains(err.Error(), "bundle sha256:") || !strings.Contains(err.Error(), ".sig signature 0") {
		t.Errorf("message should name both signatures: %v", err)
	}
}

func TestPolicyArguments(t *testing.T) {
	host := startRegistry(t, true)
	d, _ := pushImage(t, host)
	s := newSigstore(t)
	tm := loadRoot(t, s)
	k := newTestKey(t, "k.pub").key
	for _, tc := range []struct {
		name string
		p    Policy
		want string
	}{
		{"empty", Policy{}, "no public keys or trusted root"},
		{"root without identities", Policy{TrustedRoot: tm, Keys: []Key{k}}, "at least one allowed identity"},
		{"identities without root", Policy{Keys: []Key{k}, Identities: []Identity{fleetIdentity}}, "without a trusted root"},
		{"issuer missing", Policy{TrustedRoot: tm, Identities: []Identity{{Subject: "x"}}}, "both issuer and subject are required"},
		{"subject missing", Policy{TrustedRoot: tm, Identities: []Identity{fleetIdentity, {Issuer: "x"}}}, "identity 2"},
		{"bad regexp", Policy{TrustedRoot: tm, Identities: []Identity{{Issuer: "(", Subject: "x"}}}, "issuer: error parsing regexp"},
		{"root without CA", Policy{TrustedRoot: emptyRoot(t), Identities: []Identity{fleetIdentity}}, "no certificate authorities"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VerifyPolicy(context.Background(), d, tc.p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			for _, s := range []error{ErrNoSignature, ErrKeyMismatch, ErrIdentityMismatch, ErrRegistry} {
				if errors.Is(err, s) {
					t.Errorf("invalid policy reported as %v", s)
				}
			}
		})
	}
	if _, err := VerifyPolicy(context.Background(), d, Policy{Keys: []Key{{Name: "zero"}}}); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("zero Key: %v, want ErrInvalidKey", err)
	}
}

func emptyRoot(t *testing.T) root.TrustedMaterial {
	t.Helper()
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestLoadTrustedRoot(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	s := newSigstore(t)
	good, err := s.TrustedRootJSON()
	if err != nil {
		t.Fatal(err)
	}
	tm, err := LoadTrustedRoot(write("good.json", good))
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.FulcioCertificateAuthorities()) != 1 || len(tm.RekorLogs()) != 1 || len(tm.TimestampingAuthorities()) != 1 || len(tm.CTLogs()) != 0 {
		t.Errorf("loaded root: %d CAs, %d tlogs, %d TSAs, %d CT logs",
			len(tm.FulcioCertificateAuthorities()), len(tm.RekorLogs()), len(tm.TimestampingAuthorities()), len(tm.CTLogs()))
	}

	var doc map[string]any
	if err := json.Unmarshal(good, &doc); err != nil {
		t.Fatal(err)
	}
	delete(doc, "certificateAuthorities")
	noCA, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "nope.json"), "nope.json"},
		{"not json", write("bad.json", []byte("{")), "bad.json"},
		{"wrong media type", write("mt.json", []byte(`{"mediaType":"application/json"}`)), "media type"},
		{"no CA", write("noca.json", noCA), "no certificate authorities"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadTrustedRoot(tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestAttachBundleChecks(t *testing.T) {
	host := startRegistry(t, true)
	d, _ := pushImage(t, host)
	other, _ := pushImage(t, host)
	s := newSigstore(t)
	bj, err := s.SignBundle(d.DigestStr(), ghSubject, ghIssuer)
	if err != nil {
		t.Fatal(err)
	}
	sbom, err := s.SignStatement([]byte(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"`+
		strings.TrimPrefix(d.DigestStr(), "sha256:")+`"}}],"predicateType":"https://spdx.dev/Document","predicate":{}}`), ghSubject, ghIssuer)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		d    name.Digest
		b    []byte
		want string
	}{
		{"other digest", other, bj, "names " + d.DigestStr()},
		{"not a bundle", d, []byte(`{"mediaType":"x"}`), "parsing bundle"},
		{"other predicate", d, sbom, "predicate type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := AttachBundle(context.Background(), tc.d, tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
	if n := len(bundleReferrers(t, d)) + len(bundleReferrers(t, other)); n != 0 {
		t.Errorf("%d referrers written by failed attaches", n)
	}
	if err := AttachBundle(context.Background(), d, bj); err != nil {
		t.Fatal(err)
	}
	if n := len(bundleReferrers(t, d)); n != 1 {
		t.Errorf("%d bundle referrers, want 1", n)
	}
}

// TestKeylessCosignInterop: cosign's own verifier (the library behind
// `cosign verify --new-bundle-format --certificate-identity-regexp ...`)
// accepts the keyless bundle as stored by AttachBundle, against the same
// trusted_root.json, and VerifyPolicy accepts it too. So the test
// signatures are what cosign v3 produces and checks, not a private format.
func TestKeylessCosignInterop(t *testing.T) {
	for _, mode := range registryModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			host := startRegistry(t, mode.referrers)
			d, _ := pushImage(t, host)
			s := newSigstore(t)
			tm := loadRoot(t, s)
			signKeyless(t, s, d, FormatBundle, ghSubject, ghIssuer)

			co := &cosign.CheckOpts{
				NewBundleFormat: true,
				TrustedMaterial: tm,
				Identities:      []cosign.Identity{{IssuerRegExp: fleetIdentity.Issuer, SubjectRegExp: fleetIdentity.Subject}},
				IgnoreSCT:       true, // the root has no CT logs
			}
			atts, _, err := cosign.VerifyImageAttestations(context.Background(), d, co)
			if err != nil || len(atts) != 1 {
				t.Fatalf("cosign: %d verified, %v", len(atts), err)
			}
			co.Identities = []cosign.Identity{{IssuerRegExp: fleetIdentity.Issuer, SubjectRegExp: "^nobody$"}}
			if _, _, err := cosign.VerifyImageAttestations(context.Background(), d, co); err == nil {
				t.Error("cosign accepted a wrong identity")
			}
			if _, err := VerifyPolicy(context.Background(), d, Policy{TrustedRoot: tm, Identities: []Identity{fleetIdentity}}); err != nil {
				t.Error(err)
			}
		})
	}
}
