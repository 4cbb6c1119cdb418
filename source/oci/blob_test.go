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

// TestFetchBlobGivesUp: with no resume left the failure is a transport
// error naming what was received, never a refusal.
func TestFetchBlobGivesUp(t *testing.T) {
	ctx := context.Background()
	f := newFaultServer(t)
	c := newClient(t)
	ref, _, _ := f.pushRandom(t, c, 256<<10)
	f.all = true
	f.set(faultTruncate, "/blobs/", 1)
	f.then(faultNotFound)
	_, err := readBlob(ctx, c, ref, f, BlobOptions{Resumes: 2}, t)
	if !errors.Is(err, ErrTruncated) || errors.Is(err, errdef.ErrRefused) || !strings.Contains(err.Error(), "gave up after 2 resumes") {
		t.Fatalf("err = %v, want ErrTruncated after 2 resumes, not refused", err)
	}
	if n := f.damaged.Load(); n != 3 {
		t.Errorf("%d requests, want 3 (the first and 2 resumes)", n)
	}
}

// TestFetchBlobResumesAcrossCalls: what a cut-off download received is
// kept in the partial folder with its hash state, and the next FetchBlob
// (a restart) asks only for the rest; a verified blob leaves nothing.
func TestFetchBlobResumesAcrossCalls(t *testing.T) {
	ctx := context.Background()
	f := newFaultServer(t)
	c := newClient(t)
	ref, _, layer := f.pushRandom(t, c, 1<<20)
	dir := t.TempDir()
	f.set(faultTruncate, "/blobs/", 1)
	if _, err := readBlob(ctx, c, ref, f, BlobOptions{PartialDir: dir}, t); !errors.Is(err, ErrTruncated) {
		t.Fatalf("first read: %v, want ErrTruncated", err)
	}
	files := partialFiles(t, dir)
	if len(files) != 2 || !strings.HasSuffix(files[0], ".part") || !strings.HasSuffix(files[1], ".state") {
		t.Fatalf("partial folder holds %v", files)
	}
	fi, _ := os.Stat(filepath.Join(dir, files[0]))
	if fi.Size() == 0 || fi.Size() >= int64(len(layer)) {
		t.Fatalf("partial blob is %d bytes", fi.Size())
	}

	got, err := readBlob(ctx, c, ref, f, BlobOptions{PartialDir: dir}, t)
	if err != nil || !bytes.Equal(got, layer) {
		t.Fatalf("resumed read: %d bytes, %v", len(got), err)
	}
	if n := f.ranges.Load(); n != 1 {
		t.Errorf("%d Range requests, want 1", n)
	}
	if files := partialFiles(t, dir); len(files) != 0 {
		t.Errorf("partial folder holds %v after the blob verified", files)
	}
}

// TestFetchBlobDiscardsBadPartial: a partial blob whose bytes no longer
// match their saved hash state is discarded, and the blob fetched whole.
func TestFetchBlobDiscardsBadPartial(t *testing.T) {
	ctx := context.Background()
	f := newFaultServer(t)
	c := newClient(t)
	ref, _, layer := f.pushRandom(t, c, 1<<20)
	dir := t.TempDir()
	f.set(faultTruncate, "/blobs/", 1)
	if _, err := readBlob(ctx, c, ref, f, BlobOptions{PartialDir: dir}, t); err == nil {
		t.Fatal("first read succeeded")
	}
	part := filepath.Join(dir, partialFiles(t, dir)[0])
	b, _ := os.ReadFile(part)
	b[len(b)/3] ^= 0xff
	if err := os.WriteFile(part, b, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readBlob(ctx, c, ref, f, BlobOptions{PartialDir: dir}, t)
	if err != nil || !bytes.Equal(got, layer) {
		t.Fatalf("read after a bad partial: %d bytes, %v", len(got), err)
	}
	if n := f.ranges.Load(); n != 0 {
		t.Errorf("%d Range requests: the bad partial was resumed", n)
	}
}

// TestFetchBlobCorruptWithPartial: a blob that arrives whole and hashes
// wrong is refused and its partial discarded.
func TestFetchBlobCorruptWithPartial(t *testing.T) {
	ctx := context.Background()
	f := newFaultServer(t)
	c := newClient(t)
	ref, _, _ := f.pushRandom(t, c, 256<<10)
	dir := t.TempDir()
	f.set(faultCorrupt, "/blobs/", -1)
	_, err := readBlob(ctx, c, ref, f, BlobOptions{PartialDir: dir, Resumes: 3}, t)
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("err = %v, want ErrDigestMismatch", err)
	}
	if files := partialFiles(t, dir); len(files) != 0 {
		t.Errorf("partial folder holds %v after a digest mismatch", files)
	}
}

// TestFetchBlobKeepsPartialOnCancel: a download whose context ends keeps
// what it received.
func TestFetchBlobKeepsPartialOnCancel(t *testing.T) {
	f := newFaultServer(t)
	c := newClient(t)
	ref, _, _ := f.pushRandom(t, c, 256<<10)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	lim := rate.NewLimiter(32<<10, 16<<10)
	_, err := readBlob(ctx, c, ref, f, BlobOptions{PartialDir: dir, Limiter: lim}, t)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errdef.ErrRefused) {
		t.Fatalf("err = %v, want the deadline (the limiter keeps the read under 32 KiB/s)", err)
	}
	files := partialFiles(t, dir)
	if len(files) != 2 {
		t.Fatalf("partial folder holds %v", files)
	}
	st, err := readPartialState(filepath.Join(dir, files[1]))
	if err != nil || st.Offset <= 0 || st.Offset > 64<<10 {
		t.Fatalf("saved state %+v, %v: want some bytes, at most what 32 KiB/s allows", st, err)
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

// TestFetchBlobMovesToMirror: a download that its registry cannot finish
// goes on from a mirror holding the same blob, where it stopped.
func TestFetchBlobMovesToMirror(t *testing.T) {
	ctx := context.Background()
	bad, good := newFaultServer(t), newFaultServer(t)
	c := newClient(t)
	ref, _, layer := bad.pushRandom(t, c, 512<<10)
	gref, _, _ := good.pushRandom(t, c, 16)
	_, m, _ := c.Manifest(ctx, ref)
	// The same blob on the mirror.
	if _, err := c.Push(ctx, gref.WithDigest("").WithTag("copy"), Artifact{Layer: blob(layer)}); err != nil {
		t.Fatal(err)
	}
	bad.all = true
	bad.set(faultTruncate, "/blobs/", 1)
	bad.then(faultNotFound)
	rc, err := c.FetchBlob(ctx, ref, m.Layers[0], BlobOptions{Resumes: 1, Mirrors: []Reference{gref.WithDigest("")}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, layer) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if bad.damaged.Load() != 2 || good.ranges.Load() != 1 {
		t.Errorf("%d answers cut by the registry, %d Range requests to the mirror; want 2 and 1", bad.damaged.Load(), good.ranges.Load())
	}
}

// TestFetchBlobLeavesSlowMirror: a repository serving the blob far below
// SlowRate is left for the next mirror, where the download goes on.
func TestFetchBlobLeavesSlowMirror(t *testing.T) {
	ctx := context.Background()
	slow, good := newFaultServer(t), newFaultServer(t)
	c := newClient(t)
	ref, _, layer := slow.pushRandom(t, c, 256<<10)
	gref, _, _ := good.pushRandom(t, c, 16)
	if _, err := c.Push(ctx, gref.WithDigest("").WithTag("copy"), Artifact{Layer: blob(layer)}); err != nil {
		t.Fatal(err)
	}
	_, m, _ := c.Manifest(ctx, ref)
	slow.set(faultSlow, "/blobs/", -1)
	rc, err := c.FetchBlob(ctx, ref, m.Layers[0], BlobOptions{Mirrors: []Reference{gref.WithDigest("")}, SlowWindow: 500 * time.Millisecond, SlowRate: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, layer) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if s := rc.(interface{ Served() int }).Served(); s != 1 || good.ranges.Load() != 1 {
		t.Errorf("served by %d with %d Range requests to the mirror, want the mirror resuming once", s, good.ranges.Load())
	}
	// Without a mirror to go to, a slow download goes on.
	ctx2, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = readBlob(ctx2, c, ref, slow, BlobOptions{SlowWindow: 100 * time.Millisecond, SlowRate: 64 << 10}, t)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow download without a mirror: %v, want it to run until the deadline", err)
	}
}
