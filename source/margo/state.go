package margo

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
)

// StateVersion is the version of the State file format.
const StateVersion = 1

// maxStateFile caps the state file read back.
const maxStateFile = 16 << 20

// State is what the client remembers of the WFM across restarts: the
// accepted manifest and the deployments it listed. The agent persists it
// (Save) only once it has applied an update, so that it never claims more
// than what was reconciled.
type State struct {
	Version int `json:"version"`
	// ManifestVersion is the manifestVersion of the accepted manifest; 0
	// before the first.
	ManifestVersion uint64 `json:"manifestVersion"`
	// ETag is the accepted manifest's ETag, sent as If-None-Match.
	ETag string `json:"etag,omitempty"`
	// ManifestDigest is sha256 of the accepted manifest body: a WFM that
	// ignores If-None-Match and serves the same body again is not
	// mistaken for a replay.
	ManifestDigest string `json:"manifestDigest,omitempty"`
	// Deployments are the accepted deployments, by id.
	Deployments map[string]DeploymentState `json:"deployments,omitempty"`
	// CapabilitiesDigest is sha256 of the last capabilities the WFM
	// accepted; they are sent again when it changes.
	CapabilitiesDigest string `json:"capabilitiesDigest,omitempty"`
	// Revision is the digest of the device revision the accepted state was
	// applied as (the agent's); empty before the first. A device whose
	// revision in force is another one was stopped while it applied an
	// update, which it must then undo or redo.
	Revision string `json:"revision,omitempty"`
}

// DeploymentState is an accepted deployment.
type DeploymentState struct {
	// Digest of its ApplicationDeployment YAML.
	Digest string `json:"digest"`
	// AdoptedManifestVersion is the manifestVersion its current revision
	// came from.
	AdoptedManifestVersion uint64 `json:"adoptedManifestVersion"`
	// Name is its metadata.name, and Components its component names: what
	// a removal status needs once the YAML is gone.
	Name       string   `json:"name"`
	Components []string `json:"components"`
}

// LoadState reads the state file at path; a missing file is the empty
// state.
func LoadState(path string) (*State, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &State{Version: StateVersion}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read Margo state: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return nil, fmt.Errorf("read Margo state %s: %w", path, err)
	}
	if len(data) > maxStateFile {
		return nil, fmt.Errorf("Margo state %s is larger than %d bytes", path, maxStateFile)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("Margo state %s is corrupt: %w (remove it to resync from the WFM; manifestVersion protection restarts from 0)", path, err)
	}
	if s.Version != StateVersion {
		return nil, fmt.Errorf("Margo state %s has version %d; this berth reads version %d", path, s.Version, StateVersion)
	}
	return &s, nil
}

// Save writes the state to path atomically: a temporary file beside it,
// synced, renamed over it, the folder synced.
func (s *State) Save(path string) error {
	s.Version = StateVersion
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(path, data, 0o600)
}

// Accept records an update that the agent has applied: the manifest's
// version and ETag, the new digests (with the manifest's version as their
// adopted version) and the removal of the deployments it no longer lists.
// The deployments in failed (that could not be materialized or applied)
// keep what was accepted for them before (or stay absent), so that Replay
// offers them again as changed while the WFM answers 304. A not-modified
// update changes nothing.
func (s *State) Accept(d *Desired, failed ...string) {
	if d == nil || d.NotModified {
		return
	}
	next := map[string]DeploymentState{}
	for _, v := range d.Deployments {
		if slices.Contains(failed, v.Ref.DeploymentID) {
			if old, ok := s.Deployments[v.Ref.DeploymentID]; ok {
				next[v.Ref.DeploymentID] = old
			}
			continue
		}
		ds := DeploymentState{
			Digest:                 v.Ref.Digest,
			AdoptedManifestVersion: d.Manifest.ManifestVersion,
			Name:                   v.Deployment.Name,
		}
		for _, c := range v.Deployment.Profile.Components {
			ds.Components = append(ds.Components, c.Name)
		}
		if old, ok := s.Deployments[v.Ref.DeploymentID]; ok && old.Digest == v.Ref.Digest {
			ds.AdoptedManifestVersion = old.AdoptedManifestVersion
		}
		next[v.Ref.DeploymentID] = ds
	}
	s.ManifestVersion = d.Manifest.ManifestVersion
	s.ETag = d.ETag
	s.ManifestDigest = d.ManifestDigest
	s.Deployments = next
}

// Clone returns a deep copy.
func (s *State) Clone() *State {
	c := *s
	c.Deployments = maps.Clone(s.Deployments)
	for k, v := range c.Deployments {
		v.Components = slices.Clone(v.Components)
		c.Deployments[k] = v
	}
	return &c
}

// writeAtomic writes data to path through a synced temporary file and a
// rename, then syncs the folder.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
