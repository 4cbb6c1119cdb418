package api

import (
	"fmt"
	"maps"
	"os"
	"slices"

	"github.com/berth-dev/berth/reconcile/store"
)

// Offline answers the device commands from the state folder when no agent
// runs (the client's ErrNoAgent): what state.json records, and a suspend
// or resume the agent honours when it starts.
type Offline struct {
	// StateDir is the agent's state folder.
	StateDir string
}

// Status is the recorded state of every source, without the live parts
// (next reconcile, appliers' reports) that only a running agent knows.
func (o Offline) Status() (*Status, error) {
	state, err := store.ReadState(o.StateDir)
	if err != nil {
		return nil, err
	}
	st := &Status{StateDir: o.StateDir}
	for _, name := range slices.Sorted(maps.Keys(state.Sources)) {
		st.Sources = append(st.Sources, SourceStatus{Name: name, SourceState: *state.Sources[name]})
	}
	return st, nil
}

// History is the recorded history of source, newest first.
func (o Offline) History(source string) ([]store.Revision, error) {
	state, err := store.ReadState(o.StateDir)
	if err != nil {
		return nil, err
	}
	ss, ok := state.Sources[source]
	if !ok {
		return nil, fmt.Errorf("%w: no source %q recorded in %s", ErrUnknownSource, source, o.StateDir)
	}
	return ss.History, nil
}

// Suspend records that source is suspended (or not); the agent honours it
// when it starts.
func (o Offline) Suspend(source string, suspend bool) error {
	state, err := store.ReadState(o.StateDir)
	if err != nil {
		return err
	}
	state.Source(source).Suspended = suspend
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return err
	}
	return store.WriteState(o.StateDir, state)
}
