package fetch

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
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/oci"
)

// reg is an in-process registry that can alter the blobs it serves.
type reg struct {
	host   string
	blobs  atomic.Int64 // blob GETs
	tamper atomic.Bool
}

func newReg(t *testing.T) *reg {
	t.Helper()
	r := &reg{}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
			r.blobs.Add(1)
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

func TestExtractEndpoints(t *testing.T) {
	ctx := context.Background()
	c, err := oci.NewClient(oci.Options{Insecure: true, DockerConfig: filepath.Join(t.TempDir(), "config.json")})
	if err != nil {
		t.Fatal(err)
	}
	empty, full := newReg(t), newReg(t)
	ref := push(t, c, full, "fleet/app")
	_, m, err := c.Manifest(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	at := func(r *reg) oci.Reference { x := ref; x.Registry = r.host; return x }

	// The first endpoint does not have the blob: the second serves it.
	dir := filepath.Join(t.TempDir(), "out")
	res, err := Extract(ctx, c, ref, m, dir, Options{Endpoints: []oci.Reference{at(empty), at(full)}})
	if err != nil {
		t.Fatalf("Extract: %v", err)
	}
	if res.Endpoint != 1 {
		t.Errorf("served by endpoint %d, want 1", res.Endpoint)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "hello.txt")); err != nil || string(b) != "hello" {
		t.Errorf("extracted %q, %v", b, err)
	}

	// Nobody has it: the error names every endpoint tried.
	other := newReg(t)
	_, err = Extract(ctx, c, ref, m, filepath.Join(t.TempDir(), "out"), Options{Endpoints: []oci.Reference{at(empty), at(other)}})
	if !errors.Is(err, oci.ErrNotFound) || !strings.Contains(err.Error(), empty.host) || !strings.Contains(err.Error(), other.host) {
		t.Errorf("no endpoint: %v", err)
	}

	// The first endpoint serves altered bytes: refused, and the second
	// endpoint, which has the right ones, is not asked.
	bad := newReg(t)
	push(t, c, bad, "fleet/app")
	bad.tamper.Store(true)
	n := full.blobs.Load()
	out := filepath.Join(t.TempDir(), "out")
	_, err = Extract(ctx, c, ref, m, out, Options{Endpoints: []oci.Reference{at(bad), at(full)}})
	if !errors.Is(err, oci.ErrDigestMismatch) || !strings.Contains(err.Error(), m.Layers[0].Digest.String()) {
		t.Errorf("altered blob: %v, want a digest mismatch naming the layer", err)
	}
	if full.blobs.Load() != n {
		t.Error("fell back to another endpoint after a digest mismatch")
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the output folder exists after a failure: %v", err)
	}
}
