// Package store keeps the agent's state on the device: the verified,
// extracted revisions (content-addressed by manifest digest), the `current`
// pointer of every source, and state.json. Every change is crash-safe: a
// revision appears with one rename, `current` switches with one rename, and
// state.json is written to a temporary file, synced and renamed.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/berth-dev/berth/state"
)

// Outcome is the result of one reconcile.
type Outcome string

// Outcomes recorded in state.json.
const (
	OutcomeApplied    Outcome = "applied"     // verified, switched in and applied
	OutcomeUnchanged  Outcome = "unchanged"   // the digest is already applied
	OutcomeFailed     Outcome = "failed"      // the appliers failed; see Error
	OutcomeRefused    Outcome = "refused"     // signature, downgrade or archive check failed
	OutcomeError      Outcome = "error"       // the registry could not be reached or answered an error
	OutcomeRolledBack Outcome = "rolled-back" // an explicit rollback was applied
)

// legacyRolledBack is how OutcomeRolledBack was spelt in state.json before
// berth wrote it with a hyphen everywhere; ReadState reads it as such.
const legacyRolledBack Outcome = "rolledback"

// Revision is one artifact revision as the agent saw it.
type Revision struct {
	// Digest is the manifest digest the agent verified and pulled.
	Digest string `json:"digest"`
	// URL is the reference the digest was resolved from.
	URL string `json:"url,omitempty"`
	// Tag is the tag that resolved to Digest, when tracking tags.
	Tag string `json:"tag,omitempty"`
	// Version is the semantic version of Tag in semver mode.
	Version string `json:"version,omitempty"`
	// Created is the artifact's signed org.opencontainers.image.created.
	Created time.Time `json:"created,omitzero"`
	// Annotations are the manifest annotations (source, revision, ...).
	Annotations map[string]string `json:"annotations,omitempty"`
	// Extensions are the extensions the device enabled when it applied
	// this revision: a change re-applies the same digest.
	Extensions []string `json:"extensions,omitempty"`
	// Mirror names the registry mirror (a host or host/path prefix of the
	// agent's registries:) that served the artifact's manifest, when it
	// was not the source itself.
	Mirror string `json:"mirror,omitempty"`
	// Via says where each fetch of this revision was served from. It is
	// set for sources that registry mirrors apply to and for bundle
	// sources; nil when everything came from the source registry with no
	// mirror configured.
	Via *Via `json:"via,omitempty"`
	// Time is when this revision was switched in or attempted.
	Time time.Time `json:"time"`
	// Outcome and Error say how the attempt ended.
	Outcome Outcome `json:"outcome"`
	Error   string  `json:"error,omitempty"`
	// Apps holds the appliers' per-app results.
	Apps []state.AppStatus `json:"apps,omitempty"`
}

// ViaSource and ViaBundle are the Via values of the source registry
// itself and of a bundle file; any other value is a mirror prefix.
const (
	ViaSource = "source"
	ViaBundle = "bundle"
)

// Via records where each fetch of a revision was served from: ViaSource,
// ViaBundle, or the mirror prefix (registry.plant.local/acme). A field is
// empty when that fetch did not happen (a digest needs no tag resolution;
// a layer already on the device is not fetched again).
type Via struct {
	// Tag is where the tag was listed and resolved to the digest.
	Tag string `json:"tag,omitempty"`
	// Manifest is where the artifact's manifest was fetched.
	Manifest string `json:"manifest,omitempty"`
	// Signatures is where the signature that verified was found.
	Signatures string `json:"signatures,omitempty"`
	// Layer is where the content layer was fetched.
	Layer string `json:"layer,omitempty"`
}

// SourceState is everything the agent records about one source.
type SourceState struct {
	// Applied is the revision applied last with success; nil before the
	// first success.
	Applied *Revision `json:"applied,omitempty"`
	// Last is the outcome of the latest reconcile, successful or not.
	Last *Revision `json:"last,omitempty"`
	// LastSuccess is when a reconcile last ended without error.
	LastSuccess time.Time `json:"lastSuccess,omitzero"`
	// Suspended stops reconciling until resumed.
	Suspended bool `json:"suspended,omitempty"`
	// Failures counts consecutive failed reconciles (for backoff).
	Failures int `json:"failures,omitempty"`
	// FailedDigest is the digest whose apply failed last; it is not retried
	// before RetryAfter unless a new digest appears.
	FailedDigest string    `json:"failedDigest,omitempty"`
	RetryAfter   time.Time `json:"retryAfter,omitzero"`
	// History lists switched-in revisions, newest first, bounded.
	History []Revision `json:"history,omitempty"`
}

// State is the content of state.json.
type State struct {
	Sources map[string]*SourceState `json:"sources"`
}

// MaxHistory bounds SourceState.History.
const MaxHistory = 50

// Source returns the state of the named source, creating it.
func (s *State) Source(name string) *SourceState {
	if s.Sources == nil {
		s.Sources = map[string]*SourceState{}
	}
	ss, ok := s.Sources[name]
	if !ok {
		ss = &SourceState{}
		s.Sources[name] = ss
	}
	return ss
}

// Record appends r to the history (newest first), bounded by MaxHistory.
func (ss *SourceState) Record(r Revision) {
	ss.History = append([]Revision{r}, ss.History...)
	if len(ss.History) > MaxHistory {
		ss.History = ss.History[:MaxHistory]
	}
}

// StateFile is the name of the state file in the state folder.
const StateFile = "state.json"

// ReadState reads stateDir/state.json; a missing file is an empty state.
func ReadState(stateDir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return &State{Sources: map[string]*SourceState{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	st, err := parseState(b)
	if err != nil {
		return nil, fmt.Errorf("read state %s: %w (move it aside to start afresh)", filepath.Join(stateDir, StateFile), err)
	}
	return st, nil
}

// parseState decodes the content of state.json. A source recorded as null
// is a source with no state yet: every source of the result is usable.
func parseState(b []byte) (*State, error) {
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	if st.Sources == nil {
		st.Sources = map[string]*SourceState{}
	}
	for name, ss := range st.Sources {
		if ss == nil {
			ss = &SourceState{}
			st.Sources[name] = ss
		}
		for _, r := range []*Revision{ss.Applied, ss.Last} {
			if r != nil && r.Outcome == legacyRolledBack {
				r.Outcome = OutcomeRolledBack
			}
		}
		for i := range ss.History {
			if ss.History[i].Outcome == legacyRolledBack {
				ss.History[i].Outcome = OutcomeRolledBack
			}
		}
	}
	return &st, nil
}

// WriteState writes state.json atomically: temporary file, fsync, rename,
// fsync of the folder.
func WriteState(stateDir string, st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	return writeFileAtomic(filepath.Join(stateDir, StateFile), append(b, '\n'), 0o600)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
