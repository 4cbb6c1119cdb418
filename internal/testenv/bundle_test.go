package testenv

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAlterBundleBlob: exactly one byte of the named blob changes, in its
// data, whether the entry has a plain header or a PAX one; the other
// entries and the size stay.
func TestAlterBundleBlob(t *testing.T) {
	const hex = "0123456789abcdef"
	data := bytes.Repeat([]byte("blob data "), 300)
	other := bytes.Repeat([]byte("other "), 100)
	for _, tc := range []struct {
		name string
		pax  bool
	}{{"plain header", false}, {"PAX header", true}} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, e := range []struct {
				name string
				data []byte
			}{{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)}, {"blobs/sha256/" + hex, data}, {"blobs/sha256/other", other}} {
				h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg}
				if tc.pax {
					h.Format = tar.FormatPAX
					h.PAXRecords = map[string]string{"comment": strings.Repeat("x", 700)}
				}
				if err := tw.WriteHeader(h); err != nil {
					t.Fatal(err)
				}
				if _, err := tw.Write(e.data); err != nil {
					t.Fatal(err)
				}
			}
			if err := tw.Close(); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), "b.tar")
			if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			AlterBundleBlob(t, file, "sha256:"+hex)
			got, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != buf.Len() {
				t.Fatalf("size %d, want %d", len(got), buf.Len())
			}
			var diff []int
			for i := range got {
				if got[i] != buf.Bytes()[i] {
					diff = append(diff, i)
				}
			}
			start := bytes.Index(buf.Bytes(), data)
			if len(diff) != 1 || diff[0] < start || diff[0] >= start+len(data) {
				t.Fatalf("bytes changed at %v, want one inside the blob's data [%d, %d)", diff, start, start+len(data))
			}
		})
	}
	ft := &fatalRecorder{TB: t}
	file := filepath.Join(t.TempDir(), "empty.tar")
	var buf bytes.Buffer
	_ = tar.NewWriter(&buf).Close()
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	runInGoroutine(func() { AlterBundleBlob(ft, file, "sha256:"+hex) })
	if !strings.Contains(ft.msg, "is not in the bundle") {
		t.Errorf("missing blob: fatal message %q", ft.msg)
	}
}
