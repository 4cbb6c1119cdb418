package deliver

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/errdef"
	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/oci"
)

// pushBig pushes an artifact with one incompressible file of n bytes.
func pushBig(t *testing.T, c *oci.Client, r *reg, n int) (oci.Reference, *ocispec.Manifest) {
	t.Helper()
	ctx := context.Background()
	src := t.TempDir()
	data := make([]byte, n)
	_, _ = rand.Read(data)
	if err := os.WriteFile(filepath.Join(src, "big.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	built, err := archive.Build(ctx, src, &buf, archive.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	layer := buf.Bytes()
	ref := oci.Reference{Registry: r.host, Repository: "fleet/big", Tag: "v1"}
	desc, err := c.Push(ctx, ref, oci.Artifact{Layer: oci.Blob{
		Digest: digest.Digest(built.Digest), Size: int64(len(layer)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer)), nil },
	}})
	if err != nil {
		t.Fatal(err)
	}
	ref = ref.WithDigest(desc.Digest.String())
	_, m, err := c.Manifest(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	return ref, m
}

func client(t *testing.T) *oci.Client { return newClient(t) }

// extract pulls ref, unverified, from its registry alone into dir.
func extract(t *testing.T, c *oci.Client, ref oci.Reference, dir string, o ExtractOptions) (*Result, error) {
	t.Helper()
	v, err := (&Remote{Client: c}).Unverified(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	return v.Extract(context.Background(), dir, o)
}

// TestExtractTruncatedIsTransportFailure: a layer cut off mid-way is a
// transport failure (not a digest mismatch, not an invalid archive); with
// resumes it completes in the same pull, and with a partial folder the
// next pull resumes it (issue 11).
func TestExtractTruncatedIsTransportFailure(t *testing.T) {
	c := client(t)
	r := newReg(t)
	ref, _ := pushBig(t, c, r, 1<<20)

	r.truncate.Store(1)
	_, err := extract(t, c, ref, filepath.Join(t.TempDir(), "out"), ExtractOptions{})
	if err == nil || errors.Is(err, errdef.ErrRefused) || !errors.Is(err, oci.ErrTruncated) {
		t.Fatalf("truncated layer: %v, want oci.ErrTruncated and no refusal", err)
	}

	r.truncate.Store(1)
	out := filepath.Join(t.TempDir(), "out")
	if _, err := extract(t, c, ref, out, ExtractOptions{Resumes: 2}); err != nil {
		t.Fatalf("with resumes: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(out, "big.bin")); err != nil || fi.Size() != 1<<20 {
		t.Fatalf("extracted %v, %v", fi, err)
	}

	partials := t.TempDir()
	r.truncate.Store(1)
	ranges := r.ranges.Load()
	if _, err := extract(t, c, ref, filepath.Join(t.TempDir(), "out"), ExtractOptions{PartialDir: partials}); !errors.Is(err, oci.ErrTruncated) {
		t.Fatalf("cut pull with a partial folder: %v", err)
	}
	out = filepath.Join(t.TempDir(), "out")
	if _, err := extract(t, c, ref, out, ExtractOptions{PartialDir: partials}); err != nil {
		t.Fatalf("resumed pull: %v", err)
	}
	if r.ranges.Load() != ranges+1 {
		t.Errorf("the second pull made %d Range requests, want 1", r.ranges.Load()-ranges)
	}
	if entries, _ := os.ReadDir(partials); len(entries) != 0 {
		t.Errorf("%d files left in the partial folder", len(entries))
	}
}

// TestExtractInvalidArchiveRefused: a layer that arrives whole and
// verifies but is no archive is still refused.
func TestExtractInvalidArchiveRefused(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	r := newReg(t)
	data := bytes.Repeat([]byte("not a tar "), 1000)
	ref := oci.Reference{Registry: r.host, Repository: "fleet/junk", Tag: "v1"}
	desc, err := c.Push(ctx, ref, oci.Artifact{Layer: oci.Blob{
		Digest: digest.FromBytes(data), Size: int64(len(data)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
	}})
	if err != nil {
		t.Fatal(err)
	}
	ref = ref.WithDigest(desc.Digest.String())

	_, err = extract(t, c, ref, filepath.Join(t.TempDir(), "out"), ExtractOptions{})
	if !errors.Is(err, archive.ErrInvalidArchive) || !errors.Is(err, errdef.ErrRefused) {
		t.Fatalf("err = %v, want a refused invalid archive", err)
	}
}

// TestExtractPreflight: a pull that would leave less than MinFree is not
// started: no blob is requested.
func TestExtractPreflight(t *testing.T) {
	c := client(t)
	r := newReg(t)
	ref, _ := pushBig(t, c, r, 64<<10)
	total, avail, ok := diskSpace(t.TempDir())
	if !ok {
		t.Skip("no disk space figures on this system")
	}
	n := r.blobs.Load()
	for _, mf := range []MinFree{{Bytes: int64(total)}, {Percent: 100}, {Bytes: int64(total), Percent: 100}} {
		// also into folders that do not exist yet: measured where they
		// will be created
		for _, out := range []string{filepath.Join(t.TempDir(), "out"), filepath.Join(t.TempDir(), "new", "parent", "out")} {
			_, err := extract(t, c, ref, out, ExtractOptions{MinFree: mf})
			if !errors.Is(err, ErrNoSpace) || errors.Is(err, errdef.ErrRefused) {
				t.Fatalf("MinFree %+v into %s: %v, want ErrNoSpace", mf, out, err)
			}
		}
	}
	if r.blobs.Load() != n {
		t.Fatal("a pull refused by the pre-flight fetched the blob")
	}
	// What is left once the layer is written is enough: the pull runs.
	keep := int64(avail / 2)
	if _, err := extract(t, c, ref, filepath.Join(t.TempDir(), "out"), ExtractOptions{MinFree: MinFree{Bytes: keep, Percent: 100}}); err != nil {
		t.Fatalf("MinFree of %d bytes (of %d): %v", keep, total, err)
	}
}
