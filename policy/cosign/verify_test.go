package cosign

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// signEnv is what a TestSignVerify case sets up against.
type signEnv struct {
	host     string
	format   Format
	old, new testKey // two signing keys: before and after a rotation
	d        name.Digest
	img      v1.Image
}

func TestSignVerify(t *testing.T) {
	tests := []struct {
		name string
		// setup signs/copies/tampers and returns the digest to verify and
		// the keys to verify with.
		setup   func(t *testing.T, e *signEnv) (name.Digest, []Key)
		wantErr error
		wantKey string // Result.Key on success
		// wantMsg are substrings the error message must contain.
		wantMsg []string
	}{
		{
			name: "signed verifies",
			setup: func(t *testing.T, e *signEnv) (name.Digest, []Key) {
				mustSign(t, e.d, e.new, e.format)
				return e.d, []Key{e.new.key}
			},
			wantKey: "new.pub",
		},
		{
			name: "unsigned",
			setup: func(t *testing.T, e *signEnv) (name.Digest, []Key) {
				return e.d, []Key{e.new.key}
			},
			wantErr: ErrNoSignature,
			wantMsg: []string{"no signature found for", "berth sign", "referrers bundles and the .sig tag"},
		},
		{
			name: "wrong key",
			setup: func(t *testing.T, e *signEnv) (name.Digest, []Key) {
				mustSign(t, e.d, e.old, e.format)
				return e.d, []Key{e.new.key}
			},
			wantErr: ErrKeyMismatch,
			wantMsg: []string{"1 signature(s) found", "new.pub"},
		},
		{
			name: "rotation: signed by the second of two keys",
			setup: func(t *testing.T, e *signEnv) (name.Digest, []Key) {
				mustSign(t, e.d, e.new, e.format)
				return e.d, []Key{e.old.key, e.new.key}
			},
			wantKey: "new.pub",
		},
		{
			name: "rotation: old and new signatures, verify with new only",
			setup: func(t *testing.T, e *signEnv) (name.Digest, []Key) {
				mustSign(t, e.d, e.old, e.format)
				mustSign(t, e.d, e.new, e.format)
				return e.d, []Key{e.new.key}
			},
			wantKey: "new.pub",
		},
		{
			name: "rotation: old and new signatures, verify with old only",
			setup: func(t *testing.T, e *signEnv) (name.Digest, []Key) {
				mustSign(t, e.d, e.old, e.format)
				mustSign(t, e.d, e.new, e.format)
				return e.d, []Key{e.old.key}
			},
			wantKey: "old.pub",
		},
		{
			name: "signature copied from another artifact",
			setup: func(t *testing.T, e *signEnv) (name.Digest, []Key) {
				mustSign(t, e.d, e.new, e.format)
				other, _ := pushImage(t, e.host)
				copySignatures(t, e.d, other, e.format)
				return other, []Key{e.new.key}
			},
			wantErr: ErrDigestMismatch,
		},
		{
			name: "copied signature with an untrusted key is a key mismatch",
			setup: func(t *testing.T, e *signEnv) (name.Digest, []Key) {
				mustSign(t, e.d, e.old, e.format)
				other, _ := pushImage(t, e.host)
				copySignatures(t, e.d, other, e.format)
				return other, []Key{e.new.key}
			},
			wantErr: ErrKeyMismatch,
		},
		{
			name: "tampered manifest is unsigned",
			setup: func(t *testing.T, e *signEnv) (name.Digest, []Key) {
				mustSign(t, e.d, e.new, e.format)
				if _, err := Verify(context.Background(), e.d, []Key{e.new.key}); err != nil {
					t.Fatalf("original: %v", err)
				}
				return tamper(t, e.d, e.img), []Key{e.new.key}
			},
			wantErr: ErrNoSignature,
		},
		{
			name: "tampered manifest with the original's signature copied",
			setup: func(t *testing.T, e *signEnv) (name.Digest, []Key) {
				mustSign(t, e.d, e.new, e.format)
				td := tamper(t, e.d, e.img)
				copySignatures(t, e.d, td, e.format)
				return td, []Key{e.new.key}
			},
			wantErr: ErrDigestMismatch,
		},
		{
			name: "copied signature does not hide a genuine one",
			setup: func(t *testing.T, e *signEnv) (name.Digest, []Key) {
				mustSign(t, e.d, e.new, e.format)
				other, _ := pushImage(t, e.host)
				copySignatures(t, e.d, other, e.format)
				mustSign(t, other, e.old, e.format)
				return other, []Key{e.new.key, e.old.key}
			},
			wantKey: "old.pub",
		},
		{
			name: "signing twice with one key verifies",
			setup: func(t *testing.T, e *signEnv) (name.Digest, []Key) {
				mustSign(t, e.d, e.new, e.format)
				mustSign(t, e.d, e.new, e.format)
				return e.d, []Key{e.new.key}
			},
			wantKey: "new.pub",
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
							e := &signEnv{
								host: host, format: f, d: d, img: img,
								old: newTestKey(t, "old.pub"), new: newTestKey(t, "new.pub"),
							}
							vd, keys := tc.setup(t, e)
							res, err := Verify(context.Background(), vd, keys)
							wantErr(t, err, tc.wantErr)
							for _, m := range tc.wantMsg {
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
							if res.Format != f {
								t.Errorf("Result.Format = %v, want %v", res.Format, f)
							}
							if res.Key != tc.wantKey {
								t.Errorf("Result.Key = %q, want %q", res.Key, tc.wantKey)
							}
							if res.Digest != vd {
								t.Errorf("Result.Digest = %s, want %s", res.Digest, vd)
							}
						})
					}
				})
			}
		})
	}
}

// TestVerifyBothFormats: an artifact with a bundle by one key and a legacy
// signature by another verifies with either key, reporting the right format.
func TestVerifyBothFormats(t *testing.T) {
	for _, mode := range registryModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			host := startRegistry(t, mode.referrers)
			d, _ := pushImage(t, host)
			kb, kl := newTestKey(t, "bundle.pub"), newTestKey(t, "legacy.pub")
			mustSign(t, d, kb, FormatBundle)
			mustSign(t, d, kl, FormatLegacy)
			for _, tc := range []struct {
				key  Key
				want Format
			}{{kb.key, FormatBundle}, {kl.key, FormatLegacy}} {
				res, err := Verify(context.Background(), d, []Key{tc.key})
				if err != nil {
					t.Fatalf("%s: %v", tc.key, err)
				}
				if res.Format != tc.want || res.Key != tc.key.Name {
					t.Errorf("%s: got %+v, want format %v", tc.key, res, tc.want)
				}
			}
			_, err := Verify(context.Background(), d, []Key{newTestKey(t, "other.pub").key})
			wantErr(t, err, ErrKeyMismatch)
			if !strings.Contains(err.Error(), "2 signature(s) found (1 bundle, 1 .sig)") {
				t.Errorf("message: %v", err)
			}
		})
	}
}

// TestLegacyAppendKeepsEarlier: a second legacy signature is appended to the
// .sig image; re-signing with the same key adds nothing.
func TestLegacyAppendKeepsEarlier(t *testing.T) {
	for _, mode := range registryModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			host := startRegistry(t, mode.referrers)
			d, _ := pushImage(t, host)
			k1, k2 := newTestKey(t, "k1.pub"), newTestKey(t, "k2.pub")
			sigTag := d.Context().Tag(strings.Replace(d.DigestStr(), ":", "-", 1) + ".sig")
			layers := func() int {
				img, err := remote.Image(sigTag)
				if err != nil {
					t.Fatal(err)
				}
				ls, err := img.Layers()
				if err != nil {
					t.Fatal(err)
				}
				return len(ls)
			}

			mustSign(t, d, k1, FormatLegacy)
			mustSign(t, d, k2, FormatLegacy)
			if n := layers(); n != 2 {
				t.Fatalf(".sig has %d layers after two keys, want 2", n)
			}
			mustSign(t, d, k1, FormatLegacy)
			if n := layers(); n != 2 {
				t.Errorf(".sig has %d layers after re-signing with k1, want 2 (dupe skipped)", n)
			}
			for _, k := range []testKey{k1, k2} {
				if _, err := Verify(context.Background(), d, []Key{k.key}); err != nil {
					t.Errorf("verify with %s: %v", k.key, err)
				}
			}
		})
	}
}

func TestVerifyArguments(t *testing.T) {
	host := startRegistry(t, true)
	d, _ := pushImage(t, host)
	if _, err := Verify(context.Background(), d, nil); err == nil {
		t.Error("Verify without keys succeeded")
	}
	if _, err := Verify(context.Background(), d, []Key{{Name: "zero"}}); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("zero Key: %v, want ErrInvalidKey", err)
	}
	if err := Sign(context.Background(), d, nil, FormatBundle); err == nil {
		t.Error("Sign without key succeeded")
	}
	if err := Sign(context.Background(), d, newTestKey(t, "k").sv, Format(7)); err == nil {
		t.Error("Sign with unknown format succeeded")
	}
}

func TestFormatStrings(t *testing.T) {
	for _, f := range formats {
		got, err := ParseFormat(f.String())
		if err != nil || got != f {
			t.Errorf("ParseFormat(%q) = %v, %v", f.String(), got, err)
		}
	}
	if f, err := ParseFormat(""); err != nil || f != FormatBundle {
		t.Errorf(`ParseFormat("") = %v, %v; want bundle default`, f, err)
	}
	if _, err := ParseFormat("sigstore"); err == nil {
		t.Error(`ParseFormat("sigstore") succeeded`)
	}
	var zero Format
	if zero != FormatBundle {
		t.Error("zero Format is not FormatBundle")
	}
}
