package deliver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/berth-dev/berth/internal/errdef"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/mirror"
	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/source/selector"
)

// reg is an in-process registry that can alter or hide the blobs it
// serves.
type reg struct {
	host     string
	blobs    atomic.Int64 // blob GETs
	tamper   atomic.Bool
	hide     atomic.Bool  // answer 404 to blob GETs
	truncate atomic.Int64 // blob GETs to cut in the middle, from now on
	ranges   atomic.Int64 // blob GETs with a Range header
	pings    atomic.Int64 // GET /v2/
}

func newReg(t *testing.T) *reg {
	t.Helper()
	r := &reg{}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/v2/" {
			r.pings.Add(1)
		}
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
			r.blobs.Add(1)
			if rg := req.Header.Get("Range"); rg != "" {
				r.ranges.Add(1)
				rec := httptest.NewRecorder()
				whole := req.Clone(req.Context())
				whole.Header.Del("Range")
				h.ServeHTTP(rec, whole)
				http.ServeContent(w, req, "", time.Time{}, bytes.NewReader(rec.Body.Bytes()))
				return
			}
			if r.truncate.Load() > 0 {
				r.truncate.Add(-1)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				body := rec.Body.Bytes()
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				w.WriteHeader(rec.Code)
				w.Write(body[:len(body)/2])
				w.(http.Flusher).Flush()
				if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
					conn.Close()
				}
				return
			}
			if r.hide.Load() {
				http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
				return
			}
			if r.tamper.Load() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				body := rec.Body.Bytes()
				if len(body) > 0 {
					body[len(body)/2] ^= 0xff
				}
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.Code)
				w.Write(body)
				return
			}
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// push pushes an artifact holding one file to r and returns its reference
// by digest.
func push(t *testing.T, c *oci.Client, r *reg, repo string) oci.Reference {
	t.Helper()
	ctx := context.Background()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "hello.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	built, err := archive.Build(ctx, src, &buf, archive.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	layer := buf.Bytes()
	ref := oci.Reference{Registry: r.host, Repository: repo, Tag: "v1"}
	desc, err := c.Push(ctx, ref, oci.Artifact{Layer: oci.Blob{
		Digest: digest.Digest(built.Digest), Size: int64(len(layer)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer)), nil },
	}})
	if err != nil {
		t.Fatal(err)
	}
	return ref.WithDigest(desc.Digest.String())
}

// remote is a Remote on c whose source registry src is mirrored, in order,
// by mirrors (source fallback on).
func remote(t *testing.T, c *oci.Client, src *reg, mirrors ...*reg) *Remote {
	t.Helper()
	r := &Remote{Client: c}
	if len(mirrors) > 0 {
		set := mirror.Set{Source: src.host, SourceFallback: true}
		for _, m := range mirrors {
			set.Mirrors = append(set.Mirrors, m.host)
		}
		res, err := mirror.New([]mirror.Set{set})
		if err != nil {
			t.Fatal(err)
		}
		r.Mirrors = res
	}
	return r
}

func newClient(t *testing.T) *oci.Client {
	t.Helper()
	c, err := oci.NewClient(oci.Options{Insecure: true, DockerConfig: filepath.Join(t.TempDir(), "config.json")})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestExtractEndpoints(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	full := newReg(t)
	ref := push(t, c, full, "fleet/app")

	// The mirror has the manifest but not the blob: the source serves it.
	empty := newReg(t)
	push(t, c, empty, "fleet/app")
	empty.hide.Store(true)
	v, err := remote(t, c, full, empty).Unverified(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if v.ManifestVia.Mirror != empty.host {
		t.Fatalf("manifest served by %+v, want the mirror", v.ManifestVia)
	}
	dir := filepath.Join(t.TempDir(), "out")
	res, err := v.Extract(ctx, dir, ExtractOptions{})
	if err != nil {
		t.Fatalf("Extract: %v", err)
	}
	if res.Via.Mirror != "" {
		t.Errorf("layer served by %+v, want the source", res.Via)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "hello.txt")); err != nil || string(b) != "hello" {
		t.Errorf("extracted %q, %v", b, err)
	}

	// Nobody has it: the error names every endpoint tried.
	full.hide.Store(true)
	_, err = v.Extract(ctx, filepath.Join(t.TempDir(), "out"), ExtractOptions{})
	if !errors.Is(err, oci.ErrNotFound) || !strings.Contains(err.Error(), "[mirror "+empty.host+"]") || !strings.Contains(err.Error(), "[source "+full.host+"]") {
		t.Errorf("no endpoint: %v", err)
	}
	full.hide.Store(false)

	// The mirror serves altered bytes: refused, and the source, which has
	// the right ones, is not asked.
	bad := newReg(t)
	push(t, c, bad, "fleet/app")
	bad.tamper.Store(true)
	v, err = remote(t, c, full, bad).Unverified(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	n := full.blobs.Load()
	out := filepath.Join(t.TempDir(), "out")
	_, err = v.Extract(ctx, out, ExtractOptions{})
	if !errors.Is(err, oci.ErrDigestMismatch) || !errors.Is(err, errdef.ErrRefused) || !strings.Contains(err.Error(), v.Manifest.Layers[0].Digest.String()) {
		t.Errorf("altered blob: %v, want a refused digest mismatch naming the layer", err)
	}
	if full.blobs.Load() != n {
		t.Error("fell back to another endpoint after a digest mismatch")
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the output folder exists after a failure: %v", err)
	}
}

// keys returns a signing key and the policy that accepts it.
func keys(t *testing.T) (signature.SignerVerifier, cosign.Policy) {
	t.Helper()
	priv, pub, err := cosign.GenerateKeyPair([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kf := filepath.Join(dir, "cosign.key")
	if err := os.WriteFile(kf, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	sv, err := cosign.LoadPrivateKey(kf, func() ([]byte, error) { return []byte("pw"), nil })
	if err != nil {
		t.Fatal(err)
	}
	k, err := cosign.ParsePublicKey("cosign.pub", pub)
	if err != nil {
		t.Fatal(err)
	}
	return sv, cosign.Policy{Keys: []cosign.Key{k}}
}

func sign(t *testing.T, c *oci.Client, ref oci.Reference, sv signature.SignerVerifier) {
	t.Helper()
	d, err := c.Name(ref)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := cosign.Sign(ctx, d, sv, cosign.FormatLegacy, c.RemoteOptions(ctx)...); err != nil {
		t.Fatal(err)
	}
}

func TestVerify(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	sv, policy := keys(t)
	_, other := keys(t)

	src := newReg(t)
	ref := push(t, c, src, "fleet/app")
	mir := newReg(t)
	push(t, c, mir, "fleet/app") // same digest, no signature there
	sign(t, c, ref, sv)

	for _, tc := range []struct {
		name    string
		r       *Remote
		p       cosign.Policy
		via     string // mirror that served the signature; "" for the source
		err     error
		refused bool
	}{
		{name: "signed at the source", r: remote(t, c, src), p: policy},
		{name: "the mirror has none, the source has it", r: remote(t, c, src, mir), p: policy},
		{name: "another key", r: remote(t, c, src), p: other, err: cosign.ErrKeyMismatch, refused: true},
		{name: "another key, through a mirror", r: remote(t, c, src, mir), p: other, err: ErrUnverified, refused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := tc.r.Verify(ctx, ref, tc.p)
			if tc.err == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if v.Signature == nil || v.SignatureVia.Mirror != tc.via {
					t.Errorf("signature %+v via %+v", v.Signature, v.SignatureVia)
				}
				if _, err := v.Extract(ctx, filepath.Join(t.TempDir(), "x"), ExtractOptions{}); err != nil {
					t.Errorf("Extract: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.err) || errors.Is(err, errdef.ErrRefused) != tc.refused || !errors.Is(err, ErrUnverified) {
				t.Errorf("Verify: %v; want %v, refused %v", err, tc.err, tc.refused)
			}
		})
	}

	// A registry that cannot be read is a transport error, tried again
	// later, not a refusal.
	down := &Remote{Client: c}
	gone := ref
	gone.Registry = "127.0.0.1:1"
	if _, err := down.Verify(ctx, gone, policy); err == nil || errors.Is(err, errdef.ErrRefused) {
		t.Errorf("Verify on a dead registry: %v, want a transport error", err)
	}
}

// TestVerifyPingsOnce: the signature checks of a repository ping the
// registry (GET /v2/) once, not at every check; after a check that failed,
// the next starts afresh (credentials rotated on the device are read
// again).
func TestVerifyPingsOnce(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	sv, policy := keys(t)
	_, other := keys(t)
	src := newReg(t)
	ref := push(t, c, src, "fleet/app")
	sign(t, c, ref, sv)
	r := remote(t, c, src)
	before := src.pings.Load()
	for range 3 {
		if _, err := r.Verify(ctx, ref, policy); err != nil {
			t.Fatal(err)
		}
	}
	if n := src.pings.Load() - before; n != 1 {
		t.Errorf("three checks pinged %d times, want once", n)
	}
	if _, err := r.Verify(ctx, ref, other); !errors.Is(err, cosign.ErrKeyMismatch) {
		t.Fatalf("Verify with another key: %v", err)
	}
	before = src.pings.Load()
	if _, err := r.Verify(ctx, ref, policy); err != nil {
		t.Fatal(err)
	}
	if n := src.pings.Load() - before; n != 1 {
		t.Errorf("the check after a failed one pinged %d times, want once (afresh)", n)
	}
}

func TestPull(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	sv, policy := keys(t)
	src := newReg(t)
	ref := push(t, c, src, "fleet/app")
	tagged := ref.WithTag("v1")
	r := remote(t, c, src)

	// Unsigned: refused, nothing extracted.
	out := filepath.Join(t.TempDir(), "out")
	if _, err := r.Pull(ctx, tagged, out, PullOptions{Policy: &policy}); !errors.Is(err, cosign.ErrNoSignature) || !errors.Is(err, errdef.ErrRefused) {
		t.Errorf("Pull of an unsigned artifact: %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("extracted unverified content: %v", err)
	}
	// No policy and no opt-out: a caller's mistake.
	if _, err := r.Pull(ctx, tagged, out, PullOptions{}); !errors.Is(err, errNoPolicy) {
		t.Errorf("Pull without a policy: %v", err)
	}
	// Signed: resolved once, verified, extracted.
	sign(t, c, ref, sv)
	res, err := r.Pull(ctx, tagged, out, PullOptions{Policy: &policy})
	if err != nil || res.Digest != ref.Digest || res.Signature == nil || res.Files != 1 {
		t.Fatalf("Pull = %+v, %v", res, err)
	}
}

func TestResolveSelector(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	src := newReg(t)
	ref := push(t, c, src, "fleet/app") // tag v1
	for _, tag := range []string{"1.0.0", "1.2.0", "2.0.0"} {
		if _, err := c.Tag(ctx, ref, tag); err != nil {
			t.Fatal(err)
		}
	}
	sel, err := selector.New(selector.Policy{Semver: ">=1.0.0 <2.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := remote(t, c, src).Resolve(ctx, ref.WithTag(""), sel)
	if err != nil {
		t.Fatal(err)
	}
	if res.Tag != "1.2.0" || res.Version != "1.2.0" || res.Ref.Digest != ref.Digest || res.Via == nil || res.Via.Mirror != "" {
		t.Errorf("Resolve = %+v", res)
	}
	// A digest costs no request and resolves nothing.
	res, err = (&Remote{Client: c}).Resolve(ctx, ref, nil)
	if err != nil || res.Ref != ref || res.Via != nil {
		t.Errorf("Resolve(digest) = %+v, %v", res, err)
	}
}

// TestSignatureOfAnIndex: berth verify checks the signature of any digest,
// an image index too, without reading it as an artifact (which Verify,
// before an extraction, does).
func TestSignatureOfAnIndex(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	sv, policy := keys(t)
	src := newReg(t)
	idx, err := random.Index(64, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(src.host+"/acme/hello:1.0.0", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := ggcrremote.WriteIndex(tag, idx); err != nil {
		t.Fatal(err)
	}
	h, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ref := oci.Reference{Registry: src.host, Repository: "acme/hello", Tag: "1.0.0", Digest: h.String()}
	r := remote(t, c, src)
	if _, _, err := r.Signature(ctx, ref, policy); !errors.Is(err, cosign.ErrNoSignature) || !errors.Is(err, errdef.ErrRefused) {
		t.Errorf("Signature of an unsigned index: %v", err)
	}
	sign(t, c, ref, sv)
	res, via, err := r.Signature(ctx, ref, policy)
	if err != nil || res.Digest.DigestStr() != h.String() || via.Mirror != "" {
		t.Fatalf("Signature = %+v, %+v, %v", res, via, err)
	}
	if _, err := r.Verify(ctx, ref, policy); !errors.Is(err, oci.ErrNoLayer) {
		t.Errorf("Verify of an index for extraction: %v, want no content layer", err)
	}
}
