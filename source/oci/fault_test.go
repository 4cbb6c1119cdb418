package oci

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/errdef"
)

// fault is what faultServer does to the responses it damages.
type fault int

const (
	faultNone     fault = iota
	faultTruncate       // send half the body, then close the connection
	faultReset          // send half the body, then reset the connection
	faultCorrupt        // send the whole body with one byte flipped
	faultNotFound       // answer 404 Not Found
	faultSlow           // send the body at 4 KiB/s
)

// faultServer is an in-memory registry behind a handler that damages the
// GET responses whose path contains match, count times (-1: always).
type faultServer struct {
	host    string
	mu      sync.Mutex
	fault   fault
	match   string
	count   int
	after   fault        // the fault once count reaches 0
	noRange bool         // ignore Range headers, as some registries do
	no416   bool         // refuse Range headers with 416
	all     bool         // damage Range requests too (not only whole GETs)
	ranges  atomic.Int64 // GET requests with a Range header
	damaged atomic.Int64
}

func newFaultServer(t *testing.T) *faultServer {
	t.Helper()
	f := &faultServer{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") != "" {
			f.ranges.Add(1)
		}
		f.mu.Lock()
		if f.noRange {
			r.Header.Del("Range")
		}
		if f.no416 && r.Header.Get("Range") != "" {
			f.mu.Unlock()
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		kind := f.fault
		if f.count == 0 {
			kind = f.after
		}
		hit := r.Method == http.MethodGet && kind != faultNone && strings.Contains(r.URL.Path, f.match) && (f.all || r.Header.Get("Range") == "")
		if hit && f.count > 0 {
			f.count--
		}
		f.mu.Unlock()
		if !hit {
			serveRange(w, r, reg)
			return
		}
		f.damaged.Add(1)
		if kind == faultNotFound {
			http.Error(w, "gone", http.StatusNotFound)
			return
		}
		rec := httptest.NewRecorder()
		serveRange(rec, r, reg)
		body := rec.Body.Bytes()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if kind == faultSlow {
			w.WriteHeader(rec.Code)
			for i := 0; i < len(body); i += 1 << 10 {
				if _, err := w.Write(body[i:min(i+1<<10, len(body))]); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(250 * time.Millisecond):
				}
			}
			return
		}
		if kind == faultCorrupt {
			body = bytes.Clone(body)
			body[len(body)/2] ^= 0xff
			w.WriteHeader(rec.Code)
			_, _ = w.Write(body)
			return
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		if kind == faultReset {
			_ = conn.(*net.TCPConn).SetLinger(0)
		}
		conn.Close()
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	f.host = u.Host
	return f
}

// serveRange serves r from reg, honouring a Range header on blob GETs
// (the in-memory registry ignores it; distribution honours it).
func serveRange(w http.ResponseWriter, r *http.Request, reg http.Handler) {
	rg := r.Header.Get("Range")
	if rg == "" || r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") {
		reg.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	whole := r.Clone(r.Context())
	whole.Header.Del("Range")
	reg.ServeHTTP(rec, whole)
	if rec.Code != http.StatusOK {
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
		return
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(rec.Body.Bytes()))
}

func (f *faultServer) set(kind fault, match string, count int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fault, f.match, f.count, f.after = kind, match, count, faultNone
}

// then makes the server answer fault once the count of set is spent.
func (f *faultServer) then(kind fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.after = kind
}

// pushRandom pushes an artifact whose layer is n random bytes and returns
// the reference by digest, the manifest and the layer.
func (f *faultServer) pushRandom(t *testing.T, c *Client, n int) (Reference, ocispec.Descriptor, []byte) {
	t.Helper()
	layer := make([]byte, n)
	_, _ = rand.Read(layer)
	ref, _ := ParseReference("oci://" + f.host + "/fleet/app:v1")
	desc, err := c.Push(context.Background(), ref, Artifact{Layer: blob(layer)})
	if err != nil {
		t.Fatal(err)
	}
	ref = ref.WithDigest(desc.Digest.String())
	_, m, err := c.Manifest(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	return ref, m.Layers[0], layer
}

// TestTransportFailuresAreNotRefusals: content that did not arrive whole
// (a reset, a truncated body) is a transport failure, never a refusal;
// content that arrived whole and hashes wrong is refused (issue 11).
func TestTransportFailuresAreNotRefusals(t *testing.T) {
	ctx := context.Background()
	f := newFaultServer(t)
	c := newClient(t)
	ref, layer, _ := f.pushRandom(t, c, 256<<10)
	for _, tc := range []struct {
		name    string
		fault   fault
		match   string
		refused bool
		want    error // nil: any transport error
	}{
		{"manifest truncated", faultTruncate, "/manifests/", false, ErrTruncated},
		{"manifest reset", faultReset, "/manifests/", false, nil},
		{"manifest corrupt", faultCorrupt, "/manifests/", true, ErrDigestMismatch},
		{"blob truncated", faultTruncate, "/blobs/", false, ErrTruncated},
		{"blob reset", faultReset, "/blobs/", false, nil},
		{"blob corrupt", faultCorrupt, "/blobs/", true, ErrDigestMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.set(tc.fault, tc.match, -1)
			defer f.set(faultNone, "", 0)
			var err error
			if strings.Contains(tc.match, "manifests") {
				_, _, err = c.Manifest(ctx, ref)
			} else {
				var rc io.ReadCloser
				rc, err = c.OpenBlob(ctx, ref, layer, 0)
				if err == nil {
					_, err = io.Copy(io.Discard, rc)
					rc.Close()
				}
			}
			if err == nil {
				t.Fatal("no error")
			}
			if got := errors.Is(err, errdef.ErrRefused); got != tc.refused {
				t.Fatalf("refused = %v, want %v: %v", got, tc.refused, err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !tc.refused && errors.Is(err, ErrDigestMismatch) {
				t.Fatalf("a transport failure reported as a digest mismatch: %v", err)
			}
		})
	}
}
