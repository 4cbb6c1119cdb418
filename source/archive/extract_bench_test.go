package archive

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// benchArchive writes, once per benchmark, a tar+gzip archive of total
// bytes of incompressible data in files of fileSize bytes, spread over
// folders of 100 files, to a temporary file, and returns its path.
func benchArchive(b testing.TB, total, fileSize int64) string {
	b.Helper()
	p := filepath.Join(b.TempDir(), "bench.tar.gz")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	zw, err := gzip.NewWriterLevel(bw, gzip.BestSpeed)
	if err != nil {
		b.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	rng := rand.NewChaCha8([32]byte{1})
	for i, written := 0, int64(0); written < total; i++ {
		n := min(fileSize, total-written)
		hdr := &tar.Header{Name: fmt.Sprintf("data/%03d/blob-%04d.bin", i/100, i), Typeflag: tar.TypeReg, Mode: 0o644, Size: n}
		if err := tw.WriteHeader(hdr); err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyN(tw, rng, n); err != nil {
			b.Fatal(err)
		}
		written += n
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		b.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkExtractAtomic extracts 256 MiB of incompressible data, as 3,000
// files and as 64 files of 4 MiB, and 5,000 files of 2 KiB, into the temp dir's file system, durable
// when it returns. The archive is read from the page cache.
func BenchmarkExtractAtomic(b *testing.B) {
	for _, shape := range []struct {
		name            string
		total, fileSize int64
	}{
		{"3000files", 256 << 20, (256 << 20) / 3000},
		{"64files", 256 << 20, 4 << 20},
		{"5000x2KiB", 5000 * 2 << 10, 2 << 10},
	} {
		b.Run(shape.name, func(b *testing.B) {
			src := benchArchive(b, shape.total, shape.fileSize)
			base := b.TempDir()
			b.SetBytes(shape.total)
			b.ResetTimer()
			for i := range b.N {
				f, err := os.Open(src)
				if err != nil {
					b.Fatal(err)
				}
				dir := filepath.Join(base, fmt.Sprint(i))
				if _, err := ExtractAtomic(context.Background(), bufio.NewReaderSize(f, 1<<20), dir, Limits{}); err != nil {
					b.Fatal(err)
				}
				f.Close()
				b.StopTimer()
				if err := os.RemoveAll(dir); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
