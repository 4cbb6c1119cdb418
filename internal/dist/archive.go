package dist

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Entry is one file of an archive or package.
type Entry struct {
	// Name is the path inside the archive, or the absolute path installed.
	Name string
	// Source is the file to copy; Data is used when Source is empty.
	Source string
	Data   []byte
	Mode   os.FileMode
}

// epoch is the time every archive entry carries: archives of the same
// binaries are the same bytes.
var epoch = time.Unix(0, 0).UTC()

// Archive writes a tar+gzip file at path holding entries under the folder
// prefix, in name order.
func Archive(path, prefix string, entries []Entry) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	sorted := slices.Clone(entries)
	slices.SortFunc(sorted, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
	for _, e := range sorted {
		if err := addEntry(tw, prefix, e); err != nil {
			return fmt.Errorf("archive %s: %s: %w", path, e.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

func addEntry(tw *tar.Writer, prefix string, e Entry) error {
	var r io.Reader
	var size int64
	if e.Source != "" {
		src, err := os.Open(e.Source)
		if err != nil {
			return err
		}
		defer src.Close()
		st, err := src.Stat()
		if err != nil {
			return err
		}
		r, size = src, st.Size()
	} else {
		r, size = strings.NewReader(string(e.Data)), int64(len(e.Data))
	}
	mode := e.Mode
	if mode == 0 {
		mode = 0o644
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: filepath.ToSlash(filepath.Join(prefix, e.Name)), Mode: int64(mode.Perm()), Size: size, ModTime: epoch, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := io.Copy(tw, r)
	return err
}

// Checksums writes SHA256SUMS in dir for files (names in dir), in the
// format `sha256sum -c` reads, and returns its path.
func Checksums(dir string, files []string) (string, error) {
	var b strings.Builder
	for _, name := range slices.Sorted(slices.Values(files)) {
		sum, err := fileSHA256(filepath.Join(dir, name))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s  %s\n", sum, name)
	}
	path := filepath.Join(dir, "SHA256SUMS")
	return path, os.WriteFile(path, []byte(b.String()), 0o644)
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// DocEntries lists the completion scripts and man pages in docsDir
// (completion/ and man/, as cli.WriteDocs writes them) as entries under
// the same names.
func DocEntries(docsDir string) ([]Entry, error) {
	var out []Entry
	for _, sub := range []string{"completion", "man"} {
		files, err := os.ReadDir(filepath.Join(docsDir, sub))
		if err != nil {
			return nil, fmt.Errorf("%w: %v (generate them first)", ErrMissing, err)
		}
		for _, f := range files {
			out = append(out, Entry{Name: sub + "/" + f.Name(), Source: filepath.Join(docsDir, sub, f.Name())})
		}
	}
	return out, nil
}
