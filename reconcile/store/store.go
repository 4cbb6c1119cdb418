package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/failpoint"
)

// Store is the on-disk layout under the state folder:
//
//	stateDir/state.json
//	stateDir/revisions/sha256-<hex>/           extracted, verified revisions
//	stateDir/revisions/sha256-<hex>.complete   their completion records
//	stateDir/sources/<name>/current            symlink to ../../revisions/sha256-<hex>
//	stateDir/trash/                            revisions being removed
//	stateDir/downloads/                        partial downloads (see PartialDir)
//
// A revision is usable (Has) only once its completion record exists: the
// record is written last, after the extracted tree is durable, and removed
// first when the revision is collected. A revision folder without its
// record is the leftover of a crash and is removed by Open.
type Store struct {
	dir string
	// Removed lists what Open removed as incomplete (folders of revisions
	// without a valid completion record), for the caller to log.
	Removed []string
}

// Folders of the state folder.
const (
	revisionsDir = "revisions"
	sourcesDir   = "sources"
	trashDir     = "trash"
	downloadsDir = "downloads"
)

// Open prepares stateDir and removes what a crash may have left half done:
// partial extractions, revisions without a completion record, revisions
// being removed (trash) and temporary files. It never touches a complete
// revision. Partial downloads are left to their owner (see PartialDir).
func Open(stateDir string) (*Store, error) {
	for _, d := range []string{stateDir, filepath.Join(stateDir, revisionsDir), filepath.Join(stateDir, sourcesDir),
		filepath.Join(stateDir, trashDir), filepath.Join(stateDir, downloadsDir)} {
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

// PartialDir is the folder where downloads cut off (a reset, a timeout, a
// restart) are kept to be resumed (see oci.BlobOptions.PartialDir). It is
// on the same file system as the revisions.
func (s *Store) PartialDir() string { return filepath.Join(s.dir, downloadsDir) }

// clean removes leftovers of an interrupted extraction, removal or write.
func (s *Store) clean() error {
	if err := s.emptyTrash(); err != nil {
		return err
	}
	if err := s.cleanRevisions(); err != nil {
		return err
	}
	tmps, _ := filepath.Glob(filepath.Join(s.dir, "."+StateFile+".tmp-*"))
	more, _ := filepath.Glob(filepath.Join(s.dir, sourcesDir, "*", ".current.tmp-*"))
	for _, p := range append(tmps, more...) {
		os.Remove(p)
	}
	return nil
}

// revName is the folder name of the revision of digest d.
func revName(d string) (string, error) {
	dg, err := digest.Parse(d)
	if err != nil {
		return "", fmt.Errorf("revision digest %q: %w", d, err)
	}
	return dg.Algorithm().String() + "-" + dg.Encoded(), nil
}

// revDigest is the digest of a revision folder name; false for any other
// name.
func revDigest(name string) (string, bool) {
	alg, hex, ok := strings.Cut(name, "-")
	if !ok {
		return "", false
	}
	d := alg + ":" + hex
	if n, err := revName(d); err != nil || n != name {
		return "", false
	}
	return d, true
}

// RevisionDir is where the revision of digest d lives once complete. It
// must not exist before the extraction that creates it.
func (s *Store) RevisionDir(d string) (string, error) {
	n, err := revName(d)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.dir, revisionsDir, n), nil
}

// Current returns the digest `current` points at for source, or "".
func (s *Store) Current(source string) (string, error) {
	target, err := os.Readlink(filepath.Join(s.dir, sourcesDir, source, "current"))
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
	return filepath.Join(s.dir, sourcesDir, source, "current")
}

// Switch points `current` of source at the revision of digest d, which must
// be complete (Has), with one atomic rename.
func (s *Store) Switch(source, d string) error {
	if !s.Has(d) {
		return fmt.Errorf("switch %s to %s: revision not present", source, d)
	}
	n, _ := revName(d)
	dir := filepath.Join(s.dir, sourcesDir, source)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("switch %s: %w", source, err)
	}
	tmp := filepath.Join(dir, ".current.tmp-"+n)
	os.Remove(tmp)
	if err := os.Symlink(filepath.Join("..", "..", revisionsDir, n), tmp); err != nil {
		return fmt.Errorf("switch %s: %w", source, err)
	}
	failpoint.Hit("store.switch")
	if err := os.Rename(tmp, filepath.Join(dir, "current")); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("switch %s: %w", source, err)
	}
	failpoint.Hit("store.switch.renamed")
	return syncDir(dir)
}

// Clear removes the `current` pointer of source: nothing is applied.
func (s *Store) Clear(source string) error {
	dir := filepath.Join(s.dir, sourcesDir, source)
	if err := os.Remove(filepath.Join(dir, "current")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("clear current revision of %s: %w", source, err)
	}
	return syncDir(dir)
}
