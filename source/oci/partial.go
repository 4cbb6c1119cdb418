package oci

import (
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// A partial download in BlobOptions.PartialDir is two files named after
// the blob: sha256-<hex>.part holds the bytes received, sha256-<hex>.state
// the partialState of its first Offset bytes. The state is written (to a
// temporary file, synced, renamed) only after the bytes it covers are
// synced, so that after a crash the state never covers bytes that were
// lost; bytes past Offset are cut off when the download resumes.
const (
	partSuffix  = ".part"
	stateSuffix = ".state"
	// maxStateSize bounds a state file read back.
	maxStateSize = 4 << 10
	// maxPartials is how many partial downloads CleanPartials keeps, the
	// most recent.
	maxPartials = 4
)

// partialState is the saved state of a partial download.
type partialState struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	Offset int64  `json:"offset"`
	// SHA256 is the marshaled state of crypto/sha256 after Offset bytes
	// (encoding.BinaryMarshaler).
	SHA256 []byte `json:"sha256"`
}

// partial is an open partial download, locked against other downloads
// of the same blob.
type partial struct {
	f      *os.File
	state  string // path of the state file
	desc   ocispec.Descriptor
	hash   hash.Hash // state after offset bytes
	offset int64     // bytes that can be resumed from
}

// openPartial opens (or creates) the partial download of desc in dir and
// checks the bytes it holds against their saved hash state: matching, the
// download resumes after them; otherwise they are discarded. It returns nil
// when no partial download can be kept (the folder is unusable, or another
// download of the same blob holds it): the download then runs without one.
func openPartial(dir string, desc ocispec.Descriptor) *partial {
	base := filepath.Join(dir, desc.Digest.Algorithm().String()+"-"+desc.Digest.Encoded())
	f, err := os.OpenFile(base+partSuffix, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil
	}
	if !lockFile(f) {
		f.Close()
		return nil
	}
	p := &partial{f: f, state: base + stateSuffix, desc: desc, hash: sha256.New()}
	if st, err := readPartialState(p.state); err == nil && st.Digest == desc.Digest.String() && st.Size == desc.Size &&
		st.Offset > 0 && st.Offset <= desc.Size {
		if h, ok := p.check(st); ok {
			p.hash, p.offset = h, st.Offset
		}
	}
	if err := f.Truncate(p.offset); err != nil {
		f.Close()
		return nil
	}
	if p.offset == 0 {
		os.Remove(p.state)
	}
	return p
}

// check hashes the first st.Offset bytes of the partial blob and compares
// the hash state with the saved one.
func (p *partial) check(st *partialState) (hash.Hash, bool) {
	fi, err := p.f.Stat()
	if err != nil || fi.Size() < st.Offset {
		return nil, false
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(p.f, 0, st.Offset)); err != nil {
		return nil, false
	}
	got, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil || !bytes.Equal(got, st.SHA256) {
		return nil, false
	}
	return h, true
}

func readPartialState(path string) (*partialState, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var st partialState
	if err := json.NewDecoder(io.LimitReader(f, maxStateSize)).Decode(&st); err != nil {
		return nil, err
	}
	return &st, nil
}

// save records that the first offset bytes, hashed into h, are kept: the
// bytes are synced, then the state is written.
func (p *partial) save(offset int64, h hash.Hash) error {
	if err := p.f.Sync(); err != nil {
		return err
	}
	m, ok := h.(encoding.BinaryMarshaler)
	if !ok {
		return errors.New("hash state cannot be saved")
	}
	raw, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	b, err := json.Marshal(partialState{Digest: p.desc.Digest.String(), Size: p.desc.Size, Offset: offset, SHA256: raw})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p.state), filepath.Base(p.state)+".tmp-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p.state)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// close releases the partial download, keeping it.
func (p *partial) close() {
	if p != nil {
		p.f.Close()
	}
}

// discard removes the partial download.
func (p *partial) discard() {
	if p == nil {
		return
	}
	os.Remove(p.state)
	os.Remove(p.f.Name())
	p.f.Close()
}

// done removes the partial download of a blob that verified.
func (p *partial) done() { p.discard() }

// CleanPartials removes from dir (a BlobOptions.PartialDir) what cannot be
// resumed: bytes without a saved state, states without bytes or not
// readable, temporary files, downloads not touched for maxAge, and all but
// the most recent few. Call it when no download runs (at start-up). It
// returns the names it removed.
func CleanPartials(dir string, maxAge time.Duration) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("clean partial downloads in %s: %w", dir, err)
	}
	type pair struct {
		base     string
		part, st bool
		mtime    time.Time
	}
	pairs := map[string]*pair{}
	var removed []string
	remove := func(name string) {
		if os.RemoveAll(filepath.Join(dir, name)) == nil {
			removed = append(removed, name)
		}
	}
	for _, e := range entries {
		name := e.Name()
		base, suffix := strings.TrimSuffix(name, filepath.Ext(name)), filepath.Ext(name)
		if !e.Type().IsRegular() || (suffix != partSuffix && suffix != stateSuffix) {
			remove(name) // temporary state files and anything else
			continue
		}
		p := pairs[base]
		if p == nil {
			p = &pair{base: base}
			pairs[base] = p
		}
		if suffix == partSuffix {
			p.part = true
		} else {
			p.st = true
			if fi, err := e.Info(); err == nil {
				p.mtime = fi.ModTime()
			}
		}
	}
	var kept []*pair
	for _, p := range pairs {
		_, err := readPartialState(filepath.Join(dir, p.base+stateSuffix))
		if !p.part || !p.st || err != nil || time.Since(p.mtime) > maxAge {
			remove(p.base + partSuffix)
			remove(p.base + stateSuffix)
			continue
		}
		kept = append(kept, p)
	}
	sort.Slice(kept, func(i, j int) bool { return kept[i].mtime.After(kept[j].mtime) })
	for _, p := range kept[min(len(kept), maxPartials):] {
		remove(p.base + partSuffix)
		remove(p.base + stateSuffix)
	}
	sort.Strings(removed)
	return removed, nil
}
