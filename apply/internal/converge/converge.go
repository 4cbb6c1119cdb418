// Package converge holds the bookkeeping the Compose and Helm appliers
// share: a lock per source (Apply and drift restores of one source never
// overlap), the app each applier last converged per source (what drift is
// restored to), and the restore rate limit past which an app is flapping.
package converge

import (
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/berth-dev/berth/state"
)

// Target is what an app was last converged to: an app of a revision.
type Target struct {
	Rev state.Revision
	App state.App
}

// State is an applier's locks and targets. The zero value is ready; it is
// safe for concurrent use.
type State struct {
	locksMu sync.Mutex
	locks   map[string]*sync.Mutex

	mu      sync.Mutex
	targets map[string]map[string]Target // by source, then app
}

// Lock returns the lock of source.
func (s *State) Lock(source string) *sync.Mutex {
	s.locksMu.Lock()
	defer s.locksMu.Unlock()
	m, ok := s.locks[source]
	if !ok {
		if s.locks == nil {
			s.locks = map[string]*sync.Mutex{}
		}
		m = &sync.Mutex{}
		s.locks[source] = m
	}
	return m
}

// SetTargets records what the apps of source were left on by an Apply.
func (s *State) SetTargets(source string, m map[string]Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.targets == nil {
		s.targets = map[string]map[string]Target{}
	}
	s.targets[source] = m
}

// Target is what app of source was last converged to, nil when unknown or
// not deployed.
func (s *State) Target(source, app string) *Target {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.targets[source][app]; ok {
		return &t
	}
	return nil
}

// Known reports whether an Apply left apps of source deployed.
func (s *State) Known(source string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.targets[source]) > 0
}

// TargetsOf returns what the apps of rev's source must be kept on: what
// the applier last converged them to when it has applied the source since
// it started (this includes the apps of a failed revision that succeeded,
// and the rollbacks of the others), otherwise rev.Apps(uses), sorted by
// app.
func (s *State) TargetsOf(rev state.Revision, uses func(state.App) bool) []Target {
	s.mu.Lock()
	m, ok := s.targets[rev.Source]
	s.mu.Unlock()
	var out []Target
	if ok {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			out = append(out, m[k])
		}
		return out
	}
	for _, app := range rev.Apps(uses) {
		out = append(out, Target{Rev: rev, App: app})
	}
	return out
}

// Targets returns every target recorded, by source then app.
func (s *State) Targets() []Target {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Target
	for _, source := range slices.Sorted(maps.Keys(s.targets)) {
		apps := s.targets[source]
		for _, app := range slices.Sorted(maps.Keys(apps)) {
			out = append(out, apps[app])
		}
	}
	return out
}

// Limiter allows at most Max restores of a key within Window. It is not
// safe for concurrent use: the applier's own lock guards it.
type Limiter struct {
	Max    int
	Window time.Duration
	recent map[string][]time.Time // restores within the window, oldest first
}

// count drops the restores of key older than the window and counts the
// others.
func (l *Limiter) count(key string, now time.Time) int {
	r := slices.DeleteFunc(l.recent[key], func(t time.Time) bool { return now.Sub(t) >= l.Window })
	if len(r) == 0 {
		delete(l.recent, key)
	} else {
		l.recent[key] = r
	}
	return len(r)
}

// Allow counts a restore of key at now and returns true, unless Max
// restores happened within the window: then it returns false, the number
// of those restores, and when the oldest leaves the window.
func (l *Limiter) Allow(key string, now time.Time) (ok bool, restores int, until time.Time) {
	if n := l.count(key, now); n >= l.Max {
		if n > 0 {
			until = l.recent[key][0].Add(l.Window)
		}
		return false, n, until
	}
	if l.recent == nil {
		l.recent = map[string][]time.Time{}
	}
	l.recent[key] = append(l.recent[key], now)
	return true, 0, time.Time{}
}

// Saturated reports whether key had Max restores within the window.
func (l *Limiter) Saturated(key string, now time.Time) bool {
	return l.count(key, now) >= l.Max
}

// Forget drops what the limiter knows of key.
func (l *Limiter) Forget(key string) { delete(l.recent, key) }
