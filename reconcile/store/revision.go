package store

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/failpoint"
)

// completeSuffix ends the name of a revision's completion record, beside
// its folder.
const completeSuffix = ".complete"

// formatMarker, in revisions/, says that every complete revision there has
// a completion record. Its absence means a store written before records
// existed: Open then adopts the revisions it finds (see adoptLegacy).
const formatMarker = ".records-v1"

// maxRecordSize bounds a completion record read back.
const maxRecordSize = 4 << 10

// record is the completion record of a revision: what the extraction
// wrote, checked against the folder when the record is written and when
// the store is opened.
type record struct {
	Digest string    `json:"digest"`
	Files  int       `json:"files"` // regular files and symlinks
	Size   int64     `json:"size"`  // bytes of the regular files
	Time   time.Time `json:"time"`
}

func (s *Store) recordPath(name string) string {
	return filepath.Join(s.dir, revisionsDir, name+completeSuffix)
}

// readRecord reads the completion record of the revision folder name.
func (s *Store) readRecord(name string) (*record, error) {
	f, err := os.Open(s.recordPath(name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r record
	dec := json.NewDecoder(&limited{f, maxRecordSize})
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("completion record of %s: %w", name, err)
	}
	if d, ok := revDigest(name); !ok || r.Digest != d {
		return nil, fmt.Errorf("completion record of %s names %q", name, r.Digest)
	}
	return &r, nil
}

// limited fails reads past n bytes.
type limited struct {
	f *os.File
	n int64
}

func (l *limited) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("larger than a completion record")
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.f.Read(p)
	l.n -= int64(n)
	return n, err
}

// Has reports whether the complete revision of digest d is present: its
// folder and its completion record.
func (s *Store) Has(d string) bool {
	n, err := revName(d)
	if err != nil {
		return false
	}
	st, err := os.Lstat(filepath.Join(s.dir, revisionsDir, n))
	if err != nil || !st.IsDir() {
		return false
	}
	_, err = s.readRecord(n)
	return err == nil
}

// Complete marks the revision of digest d, just extracted into
// RevisionDir(d) with files files and symlinks and size bytes, complete:
// the folder is checked against those figures and the completion record is
// written, synced, and its folder synced. Until then Has(d) is false. A
// folder that does not match is removed.
func (s *Store) Complete(d string, files int, size int64) error {
	n, err := revName(d)
	if err != nil {
		return err
	}
	dir := filepath.Join(s.dir, revisionsDir, n)
	gotFiles, gotSize, err := tally(dir)
	if err != nil {
		return fmt.Errorf("complete revision %s: %w", d, err)
	}
	if gotFiles != files || gotSize != size {
		rerr := s.remove(n)
		return errors.Join(fmt.Errorf("complete revision %s: the folder holds %d files of %d bytes, the extraction wrote %d of %d: removed",
			d, gotFiles, gotSize, files, size), rerr)
	}
	failpoint.Hit("store.complete")
	b, err := json.Marshal(record{Digest: d, Files: files, Size: size, Time: time.Now().UTC()})
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.recordPath(n), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("complete revision %s: %w", d, err)
	}
	return nil
}

// Seal marks complete the revision of digest d that the caller built and
// synced in RevisionDir(d) itself rather than extracting it from an
// artifact (a Margo revision): its completion record holds what the folder
// holds. Until then Has(d) is false.
func (s *Store) Seal(d string) error {
	n, err := revName(d)
	if err != nil {
		return err
	}
	files, size, err := tally(filepath.Join(s.dir, revisionsDir, n))
	if err != nil {
		return fmt.Errorf("seal revision %s: %w", d, err)
	}
	return s.Complete(d, files, size)
}

// tally counts the regular files and symlinks below dir and the bytes of
// the regular files, as the extraction counts them.
func tally(dir string) (files int, size int64, err error) {
	err = filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case e.Type().IsRegular():
			fi, err := e.Info()
			if err != nil {
				return err
			}
			files++
			size += fi.Size()
		case e.Type()&fs.ModeSymlink != 0:
			files++
		}
		return nil
	})
	return files, size, err
}

// Discard removes whatever is stored for digest d that is not a complete
// revision (the folder of an extraction that was never completed), so that
// it can be extracted again. A complete revision is left alone.
func (s *Store) Discard(d string) error {
	n, err := revName(d)
	if err != nil {
		return err
	}
	if s.Has(d) {
		return nil
	}
	return s.remove(n)
}

// remove takes the revision folder name out of revisions/: first its
// completion record (Has is false from then on), then the folder, renamed
// into trash/ with one rename; both are synced before the folder's content
// is deleted. A crash at any point leaves either the complete revision or
// no usable revision, and Open empties the trash.
func (s *Store) remove(name string) error {
	revs := filepath.Join(s.dir, revisionsDir)
	if err := os.Remove(s.recordPath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove revision %s: %w", name, err)
	}
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	trash := filepath.Join(s.dir, trashDir, name+"-"+hex.EncodeToString(suffix[:]))
	err := os.Rename(filepath.Join(revs, name), trash)
	if errors.Is(err, fs.ErrNotExist) {
		return syncDir(revs)
	}
	if err != nil {
		return fmt.Errorf("remove revision %s: %w", name, err)
	}
	if err := syncDir(revs); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(trash)); err != nil {
		return err
	}
	failpoint.Hit("store.gc.renamed")
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("remove revision %s: %w", name, err)
	}
	return nil
}

// emptyTrash deletes what removals left in trash/.
func (s *Store) emptyTrash() error {
	dir := filepath.Join(s.dir, trashDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("empty %s: %w", dir, err)
		}
	}
	return nil
}

// cleanRevisions removes from revisions/ partial extractions, revision
// folders without a valid completion record or that do not match it, and
// records without a folder. A store written before completion records
// existed has its revisions adopted first.
func (s *Store) cleanRevisions() error {
	revs := filepath.Join(s.dir, revisionsDir)
	if _, err := os.Stat(filepath.Join(revs, formatMarker)); errors.Is(err, fs.ErrNotExist) {
		if err := s.adoptLegacy(); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(revs)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.Contains(name, ".tmp"):
			if err := os.RemoveAll(filepath.Join(revs, name)); err != nil {
				return fmt.Errorf("remove partial revision %s: %w", name, err)
			}
		case strings.HasSuffix(name, completeSuffix):
			rev := strings.TrimSuffix(name, completeSuffix)
			if _, ok := revDigest(rev); !ok {
				continue
			}
			if st, err := os.Lstat(filepath.Join(revs, rev)); err != nil || !st.IsDir() {
				if err := os.Remove(filepath.Join(revs, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("remove completion record %s: %w", name, err)
				}
			}
		case e.IsDir():
			if _, ok := revDigest(name); !ok {
				continue // not ours
			}
			if s.intact(name) {
				continue
			}
			if err := s.remove(name); err != nil {
				return err
			}
			s.Removed = append(s.Removed, name)
		}
	}
	return nil
}

// intact reports whether the revision folder name has a completion record
// that its content matches.
func (s *Store) intact(name string) bool {
	r, err := s.readRecord(name)
	if err != nil {
		return false
	}
	files, size, err := tally(filepath.Join(s.dir, revisionsDir, name))
	return err == nil && files == r.Files && size == r.Size
}

// adoptLegacy writes a completion record for every revision folder of a
// store from before records (whose GC and extraction renamed complete
// folders in place), then the format marker. It runs again after a crash
// until the marker is written.
func (s *Store) adoptLegacy() error {
	revs := filepath.Join(s.dir, revisionsDir)
	entries, err := os.ReadDir(revs)
	if err != nil {
		return err
	}
	for _, e := range entries {
		d, ok := revDigest(e.Name())
		if !ok || !e.IsDir() {
			continue
		}
		if _, err := s.readRecord(e.Name()); err == nil {
			continue
		}
		files, size, err := tally(filepath.Join(revs, e.Name()))
		if err != nil {
			return fmt.Errorf("adopt revision %s: %w", d, err)
		}
		b, _ := json.Marshal(record{Digest: d, Files: files, Size: size, Time: time.Now().UTC()})
		if err := writeFileAtomic(s.recordPath(e.Name()), append(b, '\n'), 0o600); err != nil {
			return fmt.Errorf("adopt revision %s: %w", d, err)
		}
	}
	return writeFileAtomic(filepath.Join(revs, formatMarker), []byte("revisions are complete when their .complete record exists\n"), 0o600)
}

// GC removes revisions that are neither current for any source, nor among
// the keep newest distinct digests of any source's history, nor in inUse
// (revisions being switched in right now). Each is taken out of revisions/
// with one rename before its content is deleted (see remove). Call it only
// once the state that no longer needs them is durable.
func (s *Store) GC(st *State, keep int, inUse ...string) ([]string, error) {
	live := map[string]bool{}
	for _, d := range inUse {
		live[d] = true
	}
	for name, ss := range st.Sources {
		if d, err := s.Current(name); err == nil && d != "" {
			live[d] = true
		}
		if w := ss.Waiting; w != nil {
			live[w.Digest] = true
		}
		var kept []string
		for _, r := range ss.History {
			if r.Outcome != OutcomeApplied && r.Outcome != OutcomeRolledBack {
				continue
			}
			if !slices.Contains(kept, r.Digest) && len(kept) < keep {
				kept = append(kept, r.Digest)
			}
		}
		for _, d := range kept {
			live[d] = true
		}
	}
	entries, err := os.ReadDir(filepath.Join(s.dir, revisionsDir))
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		d, ok := revDigest(e.Name())
		if !ok || !e.IsDir() || live[d] {
			continue
		}
		failpoint.Hit("store.gc")
		if err := s.remove(e.Name()); err != nil {
			return removed, fmt.Errorf("remove old revision %s: %w", d, err)
		}
		removed = append(removed, d)
	}
	return removed, nil
}
