package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Store is the on-disk layout under the state folder:
//
//	stateDir/state.json
//	stateDir/revisions/sha256-<hex>/     extracted, verified revisions
//	stateDir/sources/<name>/current      symlink to ../../revisions/sha256-<hex>
type Store struct {
	dir string
}

// Open prepares stateDir and removes what a crash may have left half done:
// partial extractions and temporary files. It never touches a complete
// revision.
func Open(stateDir string) (*Store, error) {
	for _, d := range []string{stateDir, filepath.Join(stateDir, "revisions"), filepath.Join(stateDir, "sources")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create state folder %s: %w", d, err)
		}
	}
	s := &Store{dir: stateDir}
	if err := s.clean(); err != nil {
		return nil, err
	}
	return s, nil
}

// Dir is the state folder.
func (s *Store) Dir() string { return s.dir }

// clean removes leftovers of an interrupted extraction or write.
func (s *Store) clean() error {
	entries, err := os.ReadDir(filepath.Join(s.dir, "revisions"))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			if err := os.RemoveAll(filepath.Join(s.dir, "revisions", e.Name())); err != nil {
				return fmt.Errorf("remove partial revision %s: %w", e.Name(), err)
			}
		}
	}
	tmps, _ := filepath.Glob(filepath.Join(s.dir, "."+StateFile+".tmp-*"))
	more, _ := filepath.Glob(filepath.Join(s.dir, "sources", "*", ".current.tmp-*"))
	for _, p := range append(tmps, more...) {
		os.Remove(p)
	}
	return nil
}

func revName(d string) (string, error) {
	dg, err := digest.Parse(d)
	if err != nil {
		return "", fmt.Errorf("revision digest %q: %w", d, err)
	}
	return dg.Algorithm().String() + "-" + dg.Encoded(), nil
}

// RevisionDir is where the revision of digest d lives once complete. It
// must not exist before the extraction that creates it.
func (s *Store) RevisionDir(d string) (string, error) {
	n, err := revName(d)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.dir, "revisions", n), nil
}

// Has reports whether the complete revision of digest d is present.
func (s *Store) Has(d string) bool {
	p, err := s.RevisionDir(d)
	if err != nil {
		return false
	}
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// Current returns the digest `current` points at for source, or "".
func (s *Store) Current(source string) (string, error) {
	target, err := os.Readlink(filepath.Join(s.dir, "sources", source, "current"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read current revision of %s: %w", source, err)
	}
	alg, hex, ok := strings.Cut(filepath.Base(target), "-")
	if !ok {
		return "", fmt.Errorf("current revision of %s points at %s: not a revision", source, target)
	}
	return alg + ":" + hex, nil
}

// CurrentDir is the path that always names the current revision of source.
func (s *Store) CurrentDir(source string) string {
	return filepath.Join(s.dir, "sources", source, "current")
}

// Switch points `current` of source at the revision of digest d, which must
// be present, with one atomic rename.
func (s *Store) Switch(source, d string) error {
	if !s.Has(d) {
		return fmt.Errorf("switch %s to %s: revision not present", source, d)
	}
	n, _ := revName(d)
	dir := filepath.Join(s.dir, "sources", source)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("switch %s: %w", source, err)
	}
	tmp := filepath.Join(dir, ".current.tmp-"+n)
	os.Remove(tmp)
	if err := os.Symlink(filepath.Join("..", "..", "revisions", n), tmp); err != nil {
		return fmt.Errorf("switch %s: %w", source, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "current")); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("switch %s: %w", source, err)
	}
	return syncDir(dir)
}

// Clear removes the `current` pointer of source: nothing is applied.
func (s *Store) Clear(source string) error {
	dir := filepath.Join(s.dir, "sources", source)
	if err := os.Remove(filepath.Join(dir, "current")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("clear current revision of %s: %w", source, err)
	}
	return syncDir(dir)
}

// GC removes revisions that are neither current for any source, nor among
// the keep newest distinct digests of any source's history, nor waiting
// to be switched in (prefetched, SourceState.Waiting), nor in inUse
// (revisions being switched in right now).
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
	entries, err := os.ReadDir(filepath.Join(s.dir, "revisions"))
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		alg, hex, ok := strings.Cut(e.Name(), "-")
		if !ok || strings.Contains(e.Name(), ".tmp") {
			continue
		}
		d := alg + ":" + hex
		if live[d] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.dir, "revisions", e.Name())); err != nil {
			return removed, fmt.Errorf("remove old revision %s: %w", d, err)
		}
		removed = append(removed, d)
	}
	return removed, nil
}
