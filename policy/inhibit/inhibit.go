// Package inhibit records and reads inhibitors: an app's request that the
// agent does not switch or apply a new revision that concerns it for a
// while, such as a press finishing a batch. An inhibitor is a small JSON
// file per app in the agent's state folder, <stateDir>/inhibit/<app>.json,
// so the CLI, the agent's API, or a container that mounts the folder can
// write one:
//
//	{"until": "2026-12-08T14:30:00Z", "reason": "batch 4711 running", "by": "mes"}
//
// Files are parsed strictly. An expired inhibitor holds nothing. None
// holds longer than MaxFor after its file was last written, whatever its
// until says, and a file that cannot be parsed (half written, say) holds
// its app for InvalidHold after it was written, and is reported: a broken
// file neither lets an update through at once nor holds one forever.
package inhibit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

const (
	// DirName is the folder of inhibitors in the state folder.
	DirName = "inhibit"
	// MaxFor is the longest an inhibitor holds after its file was written.
	MaxFor = 7 * 24 * time.Hour
	// InvalidHold is how long a file that cannot be parsed holds its app
	// after it was written.
	InvalidHold = time.Hour
	// MaxFileSize is the largest inhibitor file read.
	MaxFileSize = 64 << 10
	// MaxReason is the longest reason, in bytes.
	MaxReason = 1024
	// maxBy is the longest by, in bytes.
	maxBy = 256
	// ext is the extension of inhibitor files.
	ext = ".json"
)

// ErrInvalid is the class of invalid inhibitors and app names.
var ErrInvalid = errors.New("invalid inhibitor")

// Dir returns the inhibitor folder of the agent whose state folder is
// stateDir.
func Dir(stateDir string) string { return filepath.Join(stateDir, DirName) }

// Inhibitor holds an app's updates until a time.
type Inhibitor struct {
	// App is the app held (its name in berth.yaml).
	App string `json:"app"`
	// Until is when the inhibitor expires.
	Until time.Time `json:"until"`
	// Reason says why, for people.
	Reason string `json:"reason,omitempty"`
	// By says who set it (a user, a program).
	By string `json:"by,omitempty"`
	// Problem, when not empty, says why the file could not be read: the
	// inhibitor then holds for InvalidHold after the file was written.
	Problem string `json:"problem,omitempty"`
}

// file is the JSON of an inhibitor file.
type file struct {
	App    string    `json:"app,omitempty"`
	Until  time.Time `json:"until"`
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by,omitempty"`
}

var appRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// CheckApp returns why app is not an app name (a DNS label of at most 53
// characters, as in berth.yaml), or nil.
func CheckApp(app string) error {
	if len(app) > 53 || !appRE.MatchString(app) {
		return fmt.Errorf("%w: app name %q: use at most 53 lowercase letters, digits and '-', starting and ending with a letter or digit", ErrInvalid, app)
	}
	return nil
}

// Parse parses the inhibitor file of app strictly: one JSON object with
// until (RFC 3339) and optionally app (which must be the file's), reason
// and by.
func Parse(app string, data []byte) (Inhibitor, error) {
	if len(data) > MaxFileSize {
		return Inhibitor{}, fmt.Errorf("%w: %d bytes, at most %d", ErrInvalid, len(data), MaxFileSize)
	}
	var f file
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return Inhibitor{}, fmt.Errorf("%w: %v (want {\"until\": \"2026-12-08T14:30:00Z\", \"reason\": \"...\"})", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Inhibitor{}, fmt.Errorf("%w: data after the JSON object", ErrInvalid)
	}
	in := Inhibitor{App: app, Until: f.Until, Reason: f.Reason, By: f.By}
	if f.App != "" && f.App != app {
		return Inhibitor{}, fmt.Errorf("%w: the file of app %s says app %q", ErrInvalid, app, f.App)
	}
	if err := in.check(); err != nil {
		return Inhibitor{}, err
	}
	return in, nil
}

// check validates an inhibitor.
func (in Inhibitor) check() error {
	if err := CheckApp(in.App); err != nil {
		return err
	}
	switch {
	case in.Until.IsZero():
		return fmt.Errorf("%w: no until time", ErrInvalid)
	case len(in.Reason) > MaxReason || !utf8.ValidString(in.Reason):
		return fmt.Errorf("%w: reason must be UTF-8 and at most %d bytes", ErrInvalid, MaxReason)
	case len(in.By) > maxBy || !utf8.ValidString(in.By):
		return fmt.Errorf("%w: by must be UTF-8 and at most %d bytes", ErrInvalid, maxBy)
	}
	return nil
}

// Store is a folder of inhibitor files.
type Store struct {
	dir string
}

// Open returns the store of the folder dir (see Dir); nothing is read.
func Open(dir string) *Store { return &Store{dir: dir} }

// Dir returns the store's folder.
func (s *Store) Dir() string { return s.dir }

// Set writes in, replacing the app's inhibitor, atomically; its until is
// capped at now plus MaxFor, as a reader would cap it.
func (s *Store) Set(in Inhibitor, now time.Time) (Inhibitor, error) {
	in.Problem = ""
	if max := now.Add(MaxFor); in.Until.After(max) {
		in.Until = max
	}
	in.Until = in.Until.UTC().Truncate(time.Second)
	if err := in.check(); err != nil {
		return Inhibitor{}, err
	}
	if !in.Until.After(now) {
		return Inhibitor{}, fmt.Errorf("%w: until %s is not in the future", ErrInvalid, in.Until.Format(time.RFC3339))
	}
	data, err := json.MarshalIndent(file{App: in.App, Until: in.Until, Reason: in.Reason, By: in.By}, "", "  ")
	if err != nil {
		return Inhibitor{}, err
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return Inhibitor{}, fmt.Errorf("inhibit %s: %w", in.App, err)
	}
	tmp, err := os.CreateTemp(s.dir, "."+in.App+"-*")
	if err != nil {
		return Inhibitor{}, fmt.Errorf("inhibit %s: %w", in.App, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(append(data, '\n'))
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(s.dir, in.App+ext))
	}
	if err != nil {
		return Inhibitor{}, fmt.Errorf("inhibit %s: %w", in.App, err)
	}
	return in, nil
}

// Release removes the app's inhibitor and reports whether there was one.
func (s *Store) Release(app string) (bool, error) {
	if err := CheckApp(app); err != nil {
		return false, err
	}
	err := os.Remove(filepath.Join(s.dir, app+ext))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("release %s: %w", app, err)
}

// Problem is a file of the folder that is not an inhibitor.
type Problem struct {
	// File is the file's name in the folder.
	File string `json:"file"`
	// Error says what is wrong.
	Error string `json:"error"`
}

// List returns the inhibitors that hold at now, sorted by app, and the
// problems met: files that are not <app>.json, and files that cannot be
// parsed (those hold their app for InvalidHold after they were written,
// and are also listed, with Problem set). Expired inhibitors are left
// out. A missing folder holds no inhibitor.
func (s *Store) List(now time.Time) ([]Inhibitor, []Problem, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("inhibitors: %w", err)
	}
	var out []Inhibitor
	var problems []Problem
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, ".") {
			continue // a file being written
		}
		app, ok := strings.CutSuffix(n, ext)
		if !ok || CheckApp(app) != nil || !e.Type().IsRegular() {
			problems = append(problems, Problem{File: n, Error: "not an inhibitor: want a regular file <app>.json, such as web.json"})
			continue
		}
		in, written, err := s.read(n, app)
		if err != nil {
			problems = append(problems, Problem{File: n, Error: err.Error()})
			if written.IsZero() {
				continue
			}
			in = Inhibitor{App: app, Until: written.Add(InvalidHold), Problem: err.Error(), Reason: "unreadable inhibitor file"}
		} else if max := written.Add(MaxFor); in.Until.After(max) {
			in.Until = max
		}
		if in.Until.After(now) {
			out = append(out, in)
		}
	}
	slices.SortFunc(out, func(a, b Inhibitor) int { return strings.Compare(a.App, b.App) })
	return out, problems, nil
}

// read reads and parses one file; written is its modification time, zero
// when it could not be stated.
func (s *Store) read(name, app string) (Inhibitor, time.Time, error) {
	f, err := os.Open(filepath.Join(s.dir, name))
	if err != nil {
		return Inhibitor{}, time.Time{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Inhibitor{}, time.Time{}, err
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return Inhibitor{}, fi.ModTime(), err
	}
	in, err := Parse(app, data)
	return in, fi.ModTime(), err
}

// Holding returns the inhibitors that hold any of apps at now (every app
// when none is given), and the problems met, as List.
func (s *Store) Holding(now time.Time, apps ...string) ([]Inhibitor, []Problem, error) {
	all, problems, err := s.List(now)
	if err != nil || len(apps) == 0 {
		return all, problems, err
	}
	var out []Inhibitor
	for _, in := range all {
		if slices.Contains(apps, in.App) {
			out = append(out, in)
		}
	}
	return out, problems, nil
}

// String describes the inhibitor for status lines: "web until
// 2026-12-08T14:30:00Z (batch running, by mes)".
func (in Inhibitor) String() string {
	s := fmt.Sprintf("%s until %s", in.App, in.Until.UTC().Format(time.RFC3339))
	var why []string
	if in.Reason != "" {
		why = append(why, in.Reason)
	}
	if in.By != "" {
		why = append(why, "by "+in.By)
	}
	if in.Problem != "" {
		why = append(why, in.Problem)
	}
	if len(why) > 0 {
		s += " (" + strings.Join(why, ", ") + ")"
	}
	return s
}
