package bundle

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/opencontainers/go-digest"
)

// entry is a regular file in the bundle's tar: where its data starts and
// how long it is.
type entry struct {
	off, size int64
}

// tarIndex is what indexTar found.
type tarIndex struct {
	layout, index *entry
	blobs         map[digest.Digest]entry
}

// compressed magics refused with a clear message.
var compressedMagic = []struct {
	name  string
	magic []byte
}{
	{"gzip", []byte{0x1f, 0x8b}},
	{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0}},
	{"bzip2", []byte("BZh")},
}

// indexTar reads the tar's headers (seeking over the data) and records
// where each file is. It refuses anything but the layout's files.
func indexTar(f *os.File) (*tarIndex, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrInvalidBundle, f.Name())
	}
	var head [8]byte
	n, _ := f.ReadAt(head[:], 0)
	for _, c := range compressedMagic {
		if bytes.HasPrefix(head[:n], c.magic) {
			return nil, fmt.Errorf("%w: the file is %s-compressed; a bundle is an uncompressed tar (decompress it first)", ErrInvalidBundle, c.name)
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	idx := &tarIndex{blobs: map[digest.Digest]entry{}}
	seen := map[string]bool{}
	tr := tar.NewReader(f)
	for count := 0; ; count++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: reading the tar: %v", ErrInvalidBundle, err)
		}
		if count >= maxEntries {
			return nil, fmt.Errorf("%w: more than %d tar entries", ErrInvalidBundle, maxEntries)
		}
		name, err := entryName(hdr)
		if err != nil {
			return nil, fmt.Errorf("%w: tar entry %q: %v", ErrInvalidBundle, hdr.Name, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("%w: tar entry %q appears twice", ErrInvalidBundle, name)
		}
		seen[name] = true
		if hdr.Typeflag == tar.TypeDir {
			continue
		}
		pos, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, err
		}
		if hdr.Size < 0 || pos+hdr.Size > st.Size() {
			return nil, fmt.Errorf("%w: tar entry %q: the file is truncated", ErrInvalidBundle, name)
		}
		e := entry{off: pos, size: hdr.Size}
		switch name {
		case layoutFile:
			idx.layout = &e
		case indexFile:
			idx.index = &e
		default:
			d := digest.Digest(strings.Replace(strings.TrimPrefix(name, blobsDir+"/"), "/", ":", 1))
			idx.blobs[d] = e
		}
	}
	if idx.layout == nil {
		return nil, fmt.Errorf("%w: no %s file: not an OCI image layout", ErrInvalidBundle, layoutFile)
	}
	if idx.index == nil {
		return nil, fmt.Errorf("%w: no %s file: not an OCI image layout", ErrInvalidBundle, indexFile)
	}
	return idx, nil
}

// entryName checks a tar header and returns its cleaned name. Only the
// layout's files are accepted: oci-layout, index.json and
// blobs/<algorithm>/<encoded>, plus the directories blobs and
// blobs/<algorithm>.
func entryName(hdr *tar.Header) (string, error) {
	name := hdr.Name
	for strings.HasPrefix(name, "./") {
		name = name[2:]
	}
	isDir := hdr.Typeflag == tar.TypeDir
	if isDir {
		name = strings.TrimSuffix(name, "/")
	}
	if !fs.ValidPath(name) || name == "." || strings.Contains(name, `\`) {
		return "", errors.New("unsafe path (absolute, .. or malformed)")
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return "", errors.New("sparse files are not accepted")
		}
	}
	parts := strings.Split(name, "/")
	switch hdr.Typeflag {
	case tar.TypeDir:
		if parts[0] == blobsDir && len(parts) <= 2 {
			if len(parts) == 2 && digest.Algorithm(parts[1]).Available() == false {
				return "", fmt.Errorf("unknown digest algorithm %q", parts[1])
			}
			return name, nil
		}
		return "", errors.New("unexpected directory (a bundle holds oci-layout, index.json and blobs/<algorithm>/<digest>)")
	case tar.TypeReg, tar.TypeRegA:
	default:
		return "", fmt.Errorf("type %q is not a regular file: links, devices and other special entries are refused", hdr.Typeflag)
	}
	switch {
	case name == layoutFile, name == indexFile:
		return name, nil
	case len(parts) == 3 && parts[0] == blobsDir:
		d := digest.NewDigestFromEncoded(digest.Algorithm(parts[1]), parts[2])
		if err := d.Validate(); err != nil {
			return "", fmt.Errorf("not a blob name: %v", err)
		}
		return name, nil
	}
	return "", errors.New("unexpected file (a bundle holds oci-layout, index.json and blobs/<algorithm>/<digest>)")
}

// blobPath is the tar name of a blob.
func blobPath(d digest.Digest) string {
	return blobsDir + "/" + d.Algorithm().String() + "/" + d.Encoded()
}

// verifyReader checks what it reads against a digest and size. At EOF it
// fails with ErrDigestMismatch, naming the blob and what it belongs to,
// unless exactly size bytes matching the digest were read.
type verifyReader struct {
	r     io.Reader
	c     io.Closer
	want  digest.Digest
	size  int64
	n     int64
	h     hash.Hash
	owner func() string
	err   error
}

func newVerifyReader(r io.Reader, c io.Closer, d digest.Digest, size int64, owner func() string) *verifyReader {
	return &verifyReader{r: io.LimitReader(r, size+1), c: c, want: d, size: size, h: d.Algorithm().Hash(), owner: owner}
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.n > v.size {
		v.err = v.mismatch(fmt.Sprintf("longer than its %d bytes", v.size))
		return 0, v.err
	}
	if err == io.EOF {
		switch got := digest.NewDigest(v.want.Algorithm(), v.h); {
		case v.n < v.size:
			v.err = v.mismatch(fmt.Sprintf("%d bytes, shorter than its %d", v.n, v.size))
		case got != v.want:
			v.err = v.mismatch("content has digest " + got.String())
		default:
			v.err = io.EOF
		}
		return n, v.err
	}
	if err != nil {
		v.err = err
	}
	return n, err
}

func (v *verifyReader) mismatch(what string) error {
	return fmt.Errorf("%w: blob %s%s: %s", ErrDigestMismatch, v.want, v.owner(), what)
}

func (v *verifyReader) Close() error {
	if v.c == nil {
		return nil
	}
	return v.c.Close()
}
