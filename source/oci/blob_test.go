package oci

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/berth-dev/berth/internal/errdef"
)

// readBlob reads the whole blob with o and returns its bytes.
func readBlob(ctx context.Context, c *Client, ref Reference, f *faultServer, o BlobOptions, t *testing.T) ([]byte, error) {
	t.Helper()
	_, m, err := c.Manifest(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.FetchBlob(ctx, ref, m.Layers[0], o)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// partialFiles lists the files of a partial-download folder.
func partialFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// TestFetchBlobResumesInCall: a body reset or cut mid-way is resumed with
// a Range request from the byte it stopped at, within the same read.
func TestFetchBlobResumesInCall(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		fault   fault
		noRange bool
	}{
		{"reset", faultReset, false},
		{"truncated", faultTruncate, false},
		{"registry ignoring Range", faultReset, true},
		{"registry refusing Range", faultReset, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFaultServer(t)
			c := newClient(t)
			ref, _, layer := f.pushRandom(t, c, 512<<10)
			f.noRange = tc.noRange
			f.no416 = strings.Contains(tc.name, "refusing")
			f.all = true
			f.set(tc.fault, "/blobs/", 2)
			got, err := readBlob(ctx, c, ref, f, BlobOptions{Resumes: 3}, t)
			if err != nil || !bytes.Equal(got, layer) {
				t.Fatalf("read %d bytes, %v; want the %d bytes of the blob", len(got), err, len(layer))
			}
			if n := f.damaged.Load(); n != 2 {
				t.Fatalf("%d responses damaged, want 2", n)
			}
			if want := int64(2); !tc.noRange && !f.no416 && f.ranges.Load() != want {
				t.Errorf("%d Range requests, want %d", f.ranges.Load(), want)
			}
		})
	}
}

// blobRun is one read of a blob from a faultServer, for the check of a
// table case.
type blobRun struct {
	ctx   context.Context
	c     *Client
	f     *faultServer
	ref   Reference
	layer []byte
	dir   string      // the partial folder; "" without one
	opts  BlobOptions // what the read used
	err   error       // what the read returned
}

// TestFetchBlobFaults reads a blob of a registry that damages its answers
// one way or another, and checks what the read returns and what it leaves
// in the partial folder.
func TestFetchBlobFaults(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size    int
		all     bool  // damage Range requests too
		fault   fault // faultNone: no damage
		count   int
		then    fault
		partial bool // read with a partial folder
		opts    BlobOptions
		timeout time.Duration // of the read; 0: none
		check   func(t *testing.T, r *blobRun)
	}{{
		// With no resume left the failure is a transport error naming
		// what was received, never a refusal.
		name: "GivesUp", size: 256 << 10, all: true, fault: faultTruncate, count: 1, then: faultNotFound,
		opts: BlobOptions{Resumes: 2},
		check: func(t *testing.T, r *blobRun) {
			if err := r.err; !errors.Is(err, ErrTruncated) || errors.Is(err, errdef.ErrRefused) || !strings.Contains(err.Error(), "gave up after 2 resumes") {
				t.Fatalf("err = %v, want ErrTruncated after 2 resumes, not refused", err)
			}
			if n := r.f.damaged.Load(); n != 3 {
				t.Errorf("%d requests, want 3 (the first and 2 resumes)", n)
			}
		},
	}, {
		// What a cut-off download received is kept in the partial folder
		// with its hash state, and the next FetchBlob (a restart) asks only
		// for the rest; a verified blob leaves nothing.
		name: "ResumesAcrossCalls", size: 1 << 20, fault: faultTruncate, count: 1, partial: true,
		check: func(t *testing.T, r *blobRun) {
			if !errors.Is(r.err, ErrTruncated) {
				t.Fatalf("first read: %v, want ErrTruncated", r.err)
			}
			files := partialFiles(t, r.dir)
			if len(files) != 2 || !strings.HasSuffix(files[0], ".part") || !strings.HasSuffix(files[1], ".state") {
				t.Fatalf("partial folder holds %v", files)
			}
			fi, _ := os.Stat(filepath.Join(r.dir, files[0]))
			if fi.Size() == 0 || fi.Size() >= int64(len(r.layer)) {
				t.Fatalf("partial blob is %d bytes", fi.Size())
			}
			got, err := readBlob(r.ctx, r.c, r.ref, r.f, r.opts, t)
			if err != nil || !bytes.Equal(got, r.layer) {
				t.Fatalf("resumed read: %d bytes, %v", len(got), err)
			}
			if n := r.f.ranges.Load(); n != 1 {
				t.Errorf("%d Range requests, want 1", n)
			}
			if files := partialFiles(t, r.dir); len(files) != 0 {
				t.Errorf("partial folder holds %v after the blob verified", files)
			}
		},
	}, {
		// A partial blob whose bytes no longer match their saved hash state
		// is discarded, and the blob fetched whole.
		name: "DiscardsBadPartial", size: 1 << 20, fault: faultTruncate, count: 1, partial: true,
		check: func(t *testing.T, r *blobRun) {
			if r.err == nil {
				t.Fatal("first read succeeded")
			}
			part := filepath.Join(r.dir, partialFiles(t, r.dir)[0])
			b, _ := os.ReadFile(part)
			b[len(b)/3] ^= 0xff
			if err := os.WriteFile(part, b, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := readBlob(r.ctx, r.c, r.ref, r.f, r.opts, t)
			if err != nil || !bytes.Equal(got, r.layer) {
				t.Fatalf("read after a bad partial: %d bytes, %v", len(got), err)
			}
			if n := r.f.ranges.Load(); n != 0 {
				t.Errorf("%d Range requests: the bad partial was resumed", n)
			}
		},
	}, {
		// A blob that arrives whole and hashes wrong is refused and its
		// partial discarded.
		name: "CorruptWithPartial", size: 256 << 10, fault: faultCorrupt, count: -1, partial: true,
		opts: BlobOptions{Resumes: 3},
		check: func(t *testing.T, r *blobRun) {
			if !errors.Is(r.err, ErrDigestMismatch) {
				t.Fatalf("err = %v, want ErrDigestMismatch", r.err)
			}
			if files := partialFiles(t, r.dir); len(files) != 0 {
				t.Errorf("partial folder holds %v after a digest mismatch", files)
			}
		},
	}, {
		// A download whose context ends keeps what it received.
		name: "KeepsPartialOnCancel", size: 256 << 10, partial: true, timeout: 300 * time.Millisecond,
		opts: BlobOptions{Limiter: rate.NewLimiter(32<<10, 16<<10)},
		check: func(t *testing.T, r *blobRun) {
			if err := r.err; !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errdef.ErrRefused) {
				t.Fatalf("err = %v, want the deadline (the limiter keeps the read under 32 KiB/s)", err)
			}
			files := partialFiles(t, r.dir)
			if len(files) != 2 {
				t.Fatalf("partial folder holds %v", files)
			}
			st, err := readPartialState(filepath.Join(r.dir, files[1]))
			if err != nil || st.Offset <= 0 || st.Offset > 64<<10 {
				t.Fatalf("saved state %+v, %v: want some bytes, at most what 32 KiB/s allows", st, err)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFaultServer(t)
			c := newClient(t)
			ref, _, layer := f.pushRandom(t, c, tc.size)
			r := &blobRun{ctx: context.Background(), c: c, f: f, ref: ref, layer: layer, opts: tc.opts}
			if tc.partial {
				r.dir = t.TempDir()
				r.opts.PartialDir = r.dir
			}
			f.all = tc.all
			if tc.fault != faultNone {
				f.set(tc.fault, "/blobs/", tc.count)
				f.then(tc.then)
			}
			ctx := r.ctx
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			_, r.err = readBlob(ctx, c, ref, f, r.opts, t)
			tc.check(t, r)
		})
	}
}

// TestFetchBlobPartialInUse: a second download of the same blob while the
// first holds its partial runs without one.
func TestFetchBlobPartialInUse(t *testing.T) {
	ctx := context.Background()
	f := newFaultServer(t)
	c := newClient(t)
	ref, _, layer := f.pushRandom(t, c, 256<<10)
	_, m, _ := c.Manifest(ctx, ref)
	dir := t.TempDir()
	first, err := c.FetchBlob(ctx, ref, m.Layers[0], BlobOptions{PartialDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	got, err := readBlob(ctx, c, ref, f, BlobOptions{PartialDir: dir}, t)
	if err != nil || !bytes.Equal(got, layer) {
		t.Fatalf("second download: %d bytes, %v", len(got), err)
	}
}

func TestCleanPartials(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string, age time.Duration) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		mt := time.Now().Add(-age)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	state := `{"digest":"sha256:x","size":10,"offset":5,"sha256":""}`
	write("sha256-good.part", "12345", 0)
	write("sha256-good.state", state, 0)
	write("sha256-nostate.part", "12345", 0)
	write("sha256-nopart.state", state, 0)
	write("sha256-corrupt.part", "12345", 0)
	write("sha256-corrupt.state", "{", 0)
	write("sha256-old.part", "12345", 10*24*time.Hour)
	write("sha256-old.state", state, 10*24*time.Hour)
	write("sha256-good.state.tmp-123", state, 0)
	for i := range 6 {
		n := "sha256-many" + string(rune('a'+i))
		write(n+".part", "1", time.Duration(i+1)*time.Hour)
		write(n+".state", state, time.Duration(i+1)*time.Hour)
	}
	if _, err := CleanPartials(dir, 7*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	want := "sha256-good.part sha256-good.state sha256-manya.part sha256-manya.state sha256-manyb.part sha256-manyb.state sha256-manyc.part sha256-manyc.state"
	if got := strings.Join(partialFiles(t, dir), " "); got != want {
		t.Fatalf("left %s\nwant %s", got, want)
	}
	if removed, err := CleanPartials(filepath.Join(dir, "missing"), time.Hour); err != nil || removed != nil {
		t.Fatalf("missing folder: %v, %v", removed, err)
	}
}

// TestFetchBlobMirrors: a download that its registry cannot finish, or
// serves too slowly, goes on from a mirror holding the same blob, where it
// stopped.
func TestFetchBlobMirrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		size  int
		all   bool // damage Range requests too
		fault fault
		count int
		then  fault
		opts  BlobOptions // Mirrors is set by the test
		check func(t *testing.T, r *blobRun, rc io.ReadCloser, good *faultServer)
	}{{
		name: "MovesToMirror", size: 512 << 10, all: true, fault: faultTruncate, count: 1, then: faultNotFound,
		opts: BlobOptions{Resumes: 1},
		check: func(t *testing.T, r *blobRun, _ io.ReadCloser, good *faultServer) {
			if r.f.damaged.Load() != 2 || good.ranges.Load() != 1 {
				t.Errorf("%d answers cut by the registry, %d Range requests to the mirror; want 2 and 1", r.f.damaged.Load(), good.ranges.Load())
			}
		},
	}, {
		// A repository serving the blob far below SlowRate is left.
		name: "LeavesSlowMirror", size: 256 << 10, fault: faultSlow, count: -1,
		opts: BlobOptions{SlowWindow: 500 * time.Millisecond, SlowRate: 64 << 10},
		check: func(t *testing.T, r *blobRun, rc io.ReadCloser, good *faultServer) {
			if s := rc.(interface{ Served() int }).Served(); s != 1 || good.ranges.Load() != 1 {
				t.Errorf("served by %d with %d Range requests to the mirror, want the mirror resuming once", s, good.ranges.Load())
			}
			// Without a mirror to go to, a slow download goes on.
			ctx2, cancel := context.WithTimeout(r.ctx, time.Second)
			defer cancel()
			_, err := readBlob(ctx2, r.c, r.ref, r.f, BlobOptions{SlowWindow: 100 * time.Millisecond, SlowRate: 64 << 10}, t)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("slow download without a mirror: %v, want it to run until the deadline", err)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			bad, good := newFaultServer(t), newFaultServer(t)
			c := newClient(t)
			ref, _, layer := bad.pushRandom(t, c, tc.size)
			gref, _, _ := good.pushRandom(t, c, 16)
			_, m, _ := c.Manifest(ctx, ref)
			// The same blob on the mirror.
			if _, err := c.Push(ctx, gref.WithDigest("").WithTag("copy"), Artifact{Layer: blob(layer)}); err != nil {
				t.Fatal(err)
			}
			bad.all = tc.all
			bad.set(tc.fault, "/blobs/", tc.count)
			bad.then(tc.then)
			opts := tc.opts
			opts.Mirrors = []Reference{gref.WithDigest("")}
			rc, err := c.FetchBlob(ctx, ref, m.Layers[0], opts)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, layer) {
				t.Fatalf("read %d bytes, %v", len(got), err)
			}
			tc.check(t, &blobRun{ctx: ctx, c: c, f: bad, ref: ref, layer: layer, opts: opts}, rc, good)
		})
	}
}
