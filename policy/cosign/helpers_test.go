package cosign

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/berth-dev/berth/internal/signtest"
)

// registryModes are the two in-process registries every signing test runs
// against: with the OCI 1.1 referrers API, and without it (so bundles go
// through the sha256-<hex> referrers fallback tag).
var registryModes = []struct {
	name      string
	referrers bool
}{
	{"referrers-api", true},
	{"tag-fallback", false},
}

var formats = []Format{FormatBundle, FormatLegacy}

// startRegistry serves go-containerregistry's in-memory registry and returns
// its "127.0.0.1:PORT" host.
func startRegistry(t *testing.T, referrers bool) string { return signtest.Registry(t, referrers) }

var repoSeq atomic.Int64

// pushImage pushes a small random image to a fresh repository on host, tags
// it "latest" and returns its digest.
func pushImage(t *testing.T, host string, nopts ...name.Option) (name.Digest, v1.Image) {
	t.Helper()
	repo, err := name.NewRepository(fmt.Sprintf("%s/berth/app%d", host, repoSeq.Add(1)), nopts...)
	if err != nil {
		t.Fatal(err)
	}
	return signtest.PushRandom(t, repo.Tag("latest"))
}

// pushTo pushes img as repo:latest and returns its digest.
func pushTo(t *testing.T, repo name.Repository, img v1.Image, ropts ...remote.Option) name.Digest {
	t.Helper()
	return signtest.Push(t, repo.Tag("latest"), img, ropts...)
}

// testKey is an in-memory signing key and its public Key.
type testKey struct {
	sv  signature.SignerVerifier
	key Key
}

func newTestKey(t *testing.T, name string) testKey {
	t.Helper()
	sk := signtest.NewKey(t)
	k, err := ParsePublicKey(name, sk.PublicPEM)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{sv: sk.Signer, key: k}
}

func mustSign(t *testing.T, d name.Digest, k testKey, f Format, ropts ...remote.Option) {
	t.Helper()
	if err := Sign(context.Background(), d, k.sv, f, ropts...); err != nil {
		t.Fatalf("Sign(%s, %s, %v): %v", d, k.key.Name, f, err)
	}
}

// bundleReferrers returns the descriptors of d's signature bundle referrers.
func bundleReferrers(t *testing.T, d name.Digest, ropts ...remote.Option) []v1.Descriptor {
	t.Helper()
	idx, err := remote.Referrers(d, ropts...)
	if err != nil {
		t.Fatalf("referrers of %s: %v", d, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Descriptor
	for _, desc := range im.Manifests {
		got, err := remote.Get(d.Context().Digest(desc.Digest.String()), ropts...)
		if err != nil {
			t.Fatal(err)
		}
		var m v1.Manifest
		if err := json.Unmarshal(got.Manifest, &m); err != nil {
			t.Fatal(err)
		}
		if m.ArtifactType == bundleMediaType {
			out = append(out, desc)
		}
	}
	return out
}

// copySignatures does what an attacker with push access would: copy the
// signatures made for from onto to, signature bytes unchanged. Legacy: the
// .sig manifest is re-tagged sha256-<to>.sig. Bundle: each bundle referrer
// manifest of from is pushed again with its subject pointing at to.
func copySignatures(t *testing.T, from, to name.Digest, f Format) {
	t.Helper()
	switch f {
	case FormatLegacy:
		src := from.Context().Tag(strings.Replace(from.DigestStr(), ":", "-", 1) + ".sig")
		desc, err := remote.Get(src)
		if err != nil {
			t.Fatalf("get %s: %v", src, err)
		}
		dst := to.Context().Tag(strings.Replace(to.DigestStr(), ":", "-", 1) + ".sig")
		if err := remote.Tag(dst, desc); err != nil {
			t.Fatalf("tag %s: %v", dst, err)
		}
	case FormatBundle:
		subject, err := remote.Head(to)
		if err != nil {
			t.Fatal(err)
		}
		refs := bundleReferrers(t, from)
		if len(refs) == 0 {
			t.Fatalf("no bundle referrers on %s", from)
		}
		for _, desc := range refs {
			got, err := remote.Get(from.Context().Digest(desc.Digest.String()))
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(got.Manifest, &m); err != nil {
				t.Fatal(err)
			}
			m["subject"] = map[string]any{
				"mediaType": subject.MediaType,
				"digest":    subject.Digest.String(),
				"size":      subject.Size,
			}
			raw, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			h, _, err := v1.SHA256(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			if err := remote.Put(to.Context().Digest(h.String()), &rawManifest{raw: raw, mediaType: types.OCIManifestSchema1}); err != nil {
				t.Fatalf("put copied referrer: %v", err)
			}
		}
	}
}

// tamper pushes a modified copy of img (one more annotation: a different
// manifest, so a different digest) to the same repository and tag.
func tamper(t *testing.T, d name.Digest, img v1.Image) name.Digest {
	t.Helper()
	bad, ok := mutate.Annotations(img, map[string]string{"tampered": "yes"}).(v1.Image)
	if !ok {
		t.Fatal("mutate.Annotations did not return an image")
	}
	td := pushTo(t, d.Repository, bad)
	if td == d {
		t.Fatal("tampered manifest has the same digest")
	}
	return td
}

// wantErr checks err against a sentinel (nil: success expected).
func wantErr(t *testing.T, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("error = %v, want %v", err, want)
	}
}
