package replicate

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/berth-dev/berth/internal/signtest"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/source/oci"
)

// testRegistry is go-containerregistry's in-memory registry on a loopback
// port, plain HTTP, with or without the OCI 1.1 referrers API.
type testRegistry struct {
	host string
	srv  *httptest.Server

	mu      sync.Mutex
	tamper  string // a blob digest whose bytes are served altered
	writes  int    // PUT, POST and PATCH requests
	blobPut int    // blob uploads
}

func startRegistry(t *testing.T, referrers bool) *testRegistry {
	t.Helper()
	r := &testRegistry{}
	h := registry.New(registry.WithReferrersSupport(referrers), registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		switch req.Method {
		case http.MethodPut, http.MethodPost, http.MethodPatch:
			r.writes++
			if strings.Contains(req.URL.Path, "/blobs/uploads/") && req.Method != http.MethodPatch {
				r.blobPut++
			}
		}
		tamper := r.tamper
		r.mu.Unlock()
		if tamper != "" && req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/blobs/"+tamper) {
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
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	r.host = strings.TrimPrefix(r.srv.URL, "http://")
	return r
}

func (r *testRegistry) counts() (writes, blobPuts int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes, r.blobPut
}

func (r *testRegistry) resetCounts() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes, r.blobPut = 0, 0
}

// ref returns the go-containerregistry reference of host/repo:tag.
func ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pushImage pushes a random image as repo:tag and returns its digest.
func pushImage(t *testing.T, repoTag string) string {
	t.Helper()
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref(t, repoTag), img); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	d, _ := img.Digest()
	return d.String()
}

// pushIndex pushes a Docker manifest list of two platforms as repo:tag and
// returns its digest and the digests of its images.
func pushIndex(t *testing.T, repoTag string) (string, []string) {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.DockerManifestList)
	var children []string
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		img, err := random.Image(1024, 1)
		if err != nil {
			t.Fatal(err)
		}
		plat, _ := v1.ParsePlatform(p)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: plat}})
		d, _ := img.Digest()
		children = append(children, d.String())
	}
	if err := remote.WriteIndex(ref(t, repoTag), idx); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	d, _ := idx.Digest()
	return d.String(), children
}

// tag points repo:tag at digest.
func tag(t *testing.T, repo, digest, tag string) {
	t.Helper()
	desc, err := remote.Get(ref(t, repo+"@"+digest))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Tag(ref(t, repo+":"+tag).(name.Tag), desc); err != nil {
		t.Fatal(err)
	}
}

// tags lists the artifact tags of repo (signature tags left out), sorted.
func tags(t *testing.T, repo string) []string {
	t.Helper()
	r, err := name.NewRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	all, err := remote.List(r)
	if err != nil {
		return nil
	}
	all = slices.DeleteFunc(all, oci.IsSignatureTag)
	slices.Sort(all)
	return all
}

// digestOf resolves repo:tag.
func digestOf(t *testing.T, repoTag string) string {
	t.Helper()
	desc, err := remote.Head(ref(t, repoTag))
	if err != nil {
		t.Fatalf("resolve %s: %v", repoTag, err)
	}
	return desc.Digest.String()
}

// testKey is an in-memory signing key and its public key.
type testKey struct {
	sv  signature.SignerVerifier
	pub cosign.Key
}

func newKey(t *testing.T) testKey {
	t.Helper()
	sk := signtest.NewKey(t)
	k, err := cosign.ParsePublicKey("test.pub", sk.PublicPEM)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{sv: sk.Signer, pub: k}
}

func (k testKey) sign(t *testing.T, repo, digest string, f cosign.Format) {
	t.Helper()
	d, err := name.NewDigest(repo + "@" + digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := cosign.Sign(context.Background(), d, k.sv, f); err != nil {
		t.Fatalf("sign %s (%v): %v", d, f, err)
	}
}

// verify checks the signature of repo@digest and returns its format.
func (k testKey) verify(t *testing.T, repo, digest string) (cosign.Format, error) {
	t.Helper()
	d, err := name.NewDigest(repo + "@" + digest)
	if err != nil {
		t.Fatal(err)
	}
	res, err := cosign.Verify(context.Background(), d, []cosign.Key{k.pub})
	if err != nil {
		return 0, err
	}
	return res.Format, nil
}

// newSyncer parses the configuration and builds a Syncer on plain HTTP.
func newSyncer(t *testing.T, yaml string) *Syncer {
	t.Helper()
	cfg, err := Parse("mirror.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("Parse:\n%s\n%v", yaml, err)
	}
	return newSyncerFor(t, cfg)
}

func newSyncerFor(t *testing.T, cfg *Config) *Syncer {
	t.Helper()
	regs, err := NewRegistries(Access{Insecure: true, DockerConfig: filepath.Join(t.TempDir(), "config.json")}, cfg.Registries)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	s, err := New(cfg, regs, Options{Log: testLogger(t, &logs), Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sync log:\n%s", logs.String())
		}
	})
	return s
}
