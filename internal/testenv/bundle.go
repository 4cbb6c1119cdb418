package testenv

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
)

// AlterBundleBlob flips one byte in the middle of blob digest ("sha256:...")
// inside a bundle tar (an OCI layout: blobs/sha256/<hex>), in place and
// keeping its size: what a damaged or tampered USB stick gives. It fails
// the test if the tar has no such blob or an empty one.
func AlterBundleBlob(t testing.TB, file, digest string) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entry := "blobs/sha256/" + strings.TrimPrefix(digest, "sha256:")
	// After Next, the tar reader has read the entry's headers (a PAX
	// extended header too) and nothing of its data: what it has consumed
	// is where the data starts.
	cr := &countingReader{r: f}
	tr := tar.NewReader(cr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("testenv: blob %s is not in the bundle %s", digest, file)
		}
		if err != nil {
			t.Fatalf("testenv: read the bundle %s: %v", file, err)
		}
		if h.Name != entry {
			continue
		}
		if h.Size == 0 {
			t.Fatalf("testenv: blob %s of %s is empty", digest, file)
		}
		b := make([]byte, 1)
		off := cr.n + h.Size/2
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0xff
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
		return
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
