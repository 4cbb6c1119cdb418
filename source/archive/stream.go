package archive

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"strings"
)

// Default limits, used for the zero fields of [Limits].
const (
	DefaultMaxSize  int64 = 1 << 30 // 1 GiB
	DefaultMaxFiles int   = 100_000
)

// Stream overhead allowed on top of MaxSize for tar headers, padding and
// PAX records: a fixed slack plus an amount per header.
const (
	streamSlack    = 1 << 20
	headerOverhead = 4 << 10
)

// Limits bounds what reading an untrusted archive may consume. A zero or
// negative field means its default.
type Limits struct {
	// MaxSize caps the total size of the regular files' contents, counted
	// on the bytes actually read. The decompressed stream as a whole may not
	// exceed MaxSize plus 1 MiB plus 4 KiB per tar header (room for headers,
	// padding and PAX records), which stops gzip bombs early. Default
	// DefaultMaxSize (1 GiB).
	MaxSize int64
	// MaxFiles caps the number of entries: tar headers, and the files,
	// directories and symlinks they create. Default DefaultMaxFiles
	// (100000).
	MaxFiles int
	// MaxFileSize caps the size of a single file. Default MaxSize.
	MaxFileSize int64
}

func (l Limits) withDefaults() Limits {
	if l.MaxSize <= 0 {
		l.MaxSize = DefaultMaxSize
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	if l.MaxFileSize <= 0 || l.MaxFileSize > l.MaxSize {
		l.MaxFileSize = l.MaxSize
	}
	return l
}

// node is what an archive has created at a path so far.
type node struct {
	kind     kind
	target   string
	implicit bool // a parent directory without an entry of its own (yet)
}

// item is a validated archive entry, returned by reader.next.
type item struct {
	name   string   // clean, relative, slash-separated
	kind   kind     // kindDir, kindFile or kindSymlink
	mode   int64    // normalised permission bits
	size   int64    // header size of a file
	target string   // symlink target
	exists bool     // a directory already created implicitly
	mkdirs []string // missing parent directories to create first, top down
	body   io.Reader
}

// reader reads an untrusted tar or tar+gzip stream, validates every entry
// against the rules of Extract and enforces the limits. Extract and Diff
// share it, so they accept and refuse exactly the same archives.
type reader struct {
	lim   Limits
	cnt   *countReader
	gz    *gzip.Reader
	tr    *tar.Reader
	nodes map[string]*node
	links []string // symlinks, in archive order
	// escaping lists the symlinks finish found leaving the tree through
	// other symlinks; Extract removes them.
	escaping []string
	headers  int
	files    int   // regular files and symlinks
	total    int64 // file content bytes read
}

func newReader(ctx context.Context, r io.Reader, lim Limits) (*reader, error) {
	lim = lim.withDefaults()
	br := bufio.NewReader(sourceReader{r})
	magic, err := br.Peek(2)
	if len(magic) == 0 {
		if err == io.EOF {
			return nil, fmt.Errorf("reading archive: empty stream: %w", ErrInvalidArchive)
		}
		return nil, fmt.Errorf("reading archive: %w", unwrapSource(err))
	}
	rd := &reader{lim: lim, nodes: make(map[string]*node)}
	var src io.Reader = br
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, rd.streamErr(err)
		}
		rd.gz = gz
		src = gz
	}
	rd.cnt = &countReader{ctx: ctx, r: src, limit: lim.MaxSize + streamSlack}
	rd.tr = tar.NewReader(rd.cnt)
	return rd, nil
}

func (rd *reader) close() {
	if rd.gz != nil {
		rd.gz.Close()
	}
}

// streamErr classifies an error of the tar or gzip reader.
func (rd *reader) streamErr(err error) error {
	var le *limitError
	var se *sourceError
	switch {
	case errors.As(err, &le), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.As(err, &se):
		return fmt.Errorf("reading archive: %w", se.err)
	case errors.Is(err, io.EOF):
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading archive: %w: %w", ErrInvalidArchive, err)
}

// next returns the next validated entry, or io.EOF at the end of the
// archive. The body of a file must be read before calling next again.
func (rd *reader) next() (*item, error) {
	for {
		hdr, err := rd.tr.Next()
		if err == io.EOF {
			if rd.cnt.n == 0 {
				return nil, fmt.Errorf("reading archive: empty stream: %w", ErrInvalidArchive)
			}
			return nil, io.EOF
		}
		if err != nil {
			return nil, rd.streamErr(err)
		}
		if err := rd.cnt.ctx.Err(); err != nil {
			return nil, err
		}
		rd.headers++
		if rd.headers > rd.lim.MaxFiles {
			return nil, refuse(hdr.Name, fmt.Sprintf("more than %d entries", rd.lim.MaxFiles), ErrTooManyFiles)
		}
		rd.cnt.limit += headerOverhead
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		it, err := rd.check(hdr)
		if err != nil {
			return nil, err
		}
		if it != nil {
			return it, nil
		}
	}
}

// check validates hdr before anything is written. It returns nil, nil for
// an entry to skip (the target folder itself).
func (rd *reader) check(hdr *tar.Header) (*item, error) {
	raw := hdr.Name
	it := &item{}
	switch hdr.Typeflag {
	case tar.TypeReg:
		it.kind = kindFile
	case tar.TypeDir:
		it.kind = kindDir
	case tar.TypeSymlink:
		it.kind = kindSymlink
	case tar.TypeLink:
		return nil, refuse(raw, fmt.Sprintf("hard link to %q", hdr.Linkname), ErrHardLink)
	case tar.TypeChar:
		return nil, refuse(raw, "character device", ErrSpecialFile)
	case tar.TypeBlock:
		return nil, refuse(raw, "block device", ErrSpecialFile)
	case tar.TypeFifo:
		return nil, refuse(raw, "fifo", ErrSpecialFile)
	default:
		return nil, refuse(raw, fmt.Sprintf("unsupported entry type %q", hdr.Typeflag), ErrSpecialFile)
	}

	name, why := cleanName(raw)
	if why != "" {
		return nil, refuse(raw, why, ErrUnsafePath)
	}
	if name == "." {
		if it.kind == kindDir {
			return nil, nil
		}
		return nil, refuse(raw, "names the target folder itself", ErrUnsafePath)
	}
	it.name = name

	// Parents must be directories; missing ones are created.
	parts := strings.Split(name, "/")
	for i := 1; i < len(parts); i++ {
		p := strings.Join(parts[:i], "/")
		n := rd.nodes[p]
		if n == nil {
			rd.nodes[p] = &node{kind: kindDir, implicit: true}
			it.mkdirs = append(it.mkdirs, p)
			continue
		}
		if n.kind != kindDir {
			return nil, refuse(raw, fmt.Sprintf("parent %q is a %s", p, n.kind), ErrUnsafePath)
		}
	}
	if n := rd.nodes[name]; n != nil {
		if !(n.implicit && n.kind == kindDir && it.kind == kindDir) {
			return nil, refuse(raw, fmt.Sprintf("a %s already exists at this path", n.kind), ErrDuplicateEntry)
		}
		n.implicit = false
		it.exists = true
	}

	switch it.kind {
	case kindDir:
		it.mode = modeDir
	case kindSymlink:
		target := hdr.Linkname
		if why := lexicalLinkCheck(name, target); why != "" {
			return nil, refuse(raw, fmt.Sprintf("symlink target %q %s", target, why), ErrLinkOutside)
		}
		it.mode = modeSymlink
		it.target = target
		rd.files++
	case kindFile:
		it.mode = normMode(hdr.Mode)
		it.size = hdr.Size
		if hdr.Size > rd.lim.MaxFileSize {
			return nil, refuse(raw, fmt.Sprintf("file of %d bytes is over the %d bytes limit per file", hdr.Size, rd.lim.MaxFileSize), ErrTooLarge)
		}
		if hdr.Size > rd.lim.MaxSize-rd.total {
			return nil, refuse(raw, fmt.Sprintf("file of %d bytes takes the archive over its %d bytes limit", hdr.Size, rd.lim.MaxSize), ErrTooLarge)
		}
		it.body = &budgetReader{rd: rd, name: raw, left: min(rd.lim.MaxFileSize, rd.lim.MaxSize-rd.total)}
		rd.files++
	}
	if !it.exists {
		rd.nodes[name] = &node{kind: it.kind, target: it.target}
	}
	if len(rd.nodes) > rd.lim.MaxFiles {
		return nil, refuse(raw, fmt.Sprintf("more than %d files, directories and symlinks", rd.lim.MaxFiles), ErrTooManyFiles)
	}
	if it.kind == kindSymlink {
		rd.links = append(rd.links, name)
	}
	return it, nil
}

// cleanName returns the clean slash-separated form of an entry name, or why
// it is unsafe. Any ".." component is refused, even one that would stay
// inside the folder: tools that build archives never write them.
func cleanName(raw string) (name, why string) {
	switch {
	case raw == "":
		return "", "empty name"
	case strings.ContainsRune(raw, 0):
		return "", "name contains a NUL byte"
	case strings.HasPrefix(raw, "/") || isAbsTarget(raw):
		return "", "absolute path"
	}
	for _, c := range strings.Split(raw, "/") {
		if c == ".." {
			return "", `path has a ".." component`
		}
	}
	name = path.Clean(raw)
	if name != "." && !filepath.IsLocal(filepath.FromSlash(name)) {
		return "", "not a local path on this system"
	}
	return name, ""
}

// finish reads the stream to its end, so that the gzip checksum is verified
// and a caller's digest verifier sees all the bytes, then checks that no
// symlink leaves the tree through other symlinks of the archive.
func (rd *reader) finish() error {
	if _, err := io.Copy(io.Discard, rd.cnt); err != nil {
		return rd.streamErr(err)
	}
	escaping, err := rd.checkLinks()
	if err != nil {
		return err
	}
	if len(escaping) > 0 {
		l := escaping[0]
		return refuse(l, fmt.Sprintf("symlink target %q resolves outside the folder through other symlinks", rd.nodes[l].target), ErrLinkOutside)
	}
	return nil
}

// checkLinks returns the symlinks read so far that, resolved through the
// other entries read so far, lead outside the tree. Each symlink was checked
// lexically on its own already; only combinations such as "s -> ." with
// "t -> s/.." are found here.
func (rd *reader) checkLinks() ([]string, error) {
	lookup := func(rel string) (kind, string, bool, error) {
		n := rd.nodes[rel]
		if n == nil {
			return 0, "", false, nil
		}
		return n.kind, n.target, true, nil
	}
	var escaping []string
	for _, l := range rd.links {
		out, err := linkEscapes(lookup, l, rd.nodes[l].target)
		if err != nil {
			return nil, err
		}
		if out {
			escaping = append(escaping, l)
		}
	}
	return escaping, nil
}

// sourceReader marks the errors of the caller's reader, so that a network
// or verification failure is reported as such, not as an invalid archive.
type sourceReader struct{ r io.Reader }

func (s sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = &sourceError{err}
	}
	return n, err
}

type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

func unwrapSource(err error) error {
	var se *sourceError
	if errors.As(err, &se) {
		return se.err
	}
	return err
}

// limitError is ErrTooLarge raised while reading.
type limitError struct{ err error }

func (e *limitError) Error() string { return e.err.Error() }
func (e *limitError) Unwrap() error { return e.err }

// countReader counts the decompressed bytes, fails once they pass limit and
// honours ctx on every read.
type countReader struct {
	ctx   context.Context
	r     io.Reader
	n     int64
	limit int64
}

func (c *countReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	if c.n >= c.limit {
		// Only an error if there is more to read.
		var b [1]byte
		n, err := io.ReadFull(c.r, b[:])
		if n == 0 {
			return 0, err
		}
		return 0, &limitError{fmt.Errorf("reading archive: decompressed stream is over %d bytes: %w", c.limit, ErrTooLarge)}
	}
	if rem := c.limit - c.n; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// budgetReader is the body of a file entry: it never returns more bytes than
// the file or archive size limits allow, whatever the header said.
type budgetReader struct {
	rd   *reader
	name string
	left int64
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		var one [1]byte
		n, err := b.rd.tr.Read(one[:])
		if n == 0 {
			if err != io.EOF {
				err = b.rd.streamErr(err)
			}
			return 0, err
		}
		return 0, &limitError{refuse(b.name, "file content is over the size limit", ErrTooLarge)}
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rd.tr.Read(p)
	b.left -= int64(n)
	b.rd.total += int64(n)
	if err != nil && err != io.EOF {
		err = b.rd.streamErr(err)
	}
	return n, err
}
