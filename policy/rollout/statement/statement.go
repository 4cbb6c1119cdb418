// Package statement signs, stores and reads the statements CI uses to
// steer a rollout: pause, resume and abort, each about one release digest.
//
// A statement is an in-toto statement of PredicateType whose subject is
// the release's manifest digest and whose predicate names the action, the
// digest again and the signed time:
//
//	{"action": "pause", "digest": "sha256:…", "signedAt": "2026-12-08T10:00:00Z", "reason": "…"}
//
// It is signed with cosign (a key, or keyless in CI) as a sigstore bundle
// and attached to the release as an OCI referrer, or under the
// sha256-<hex> referrers fallback tag on registries without the referrers
// API, exactly where `cosign attest --new-bundle-format --type
// https://berth.dev/rollout/statement/v1 --predicate FILE REF` puts it.
//
// Read lists the statements of a release, verifies each with the source's
// trust policy, ignores (and reports) the unsigned, wrongly signed,
// malformed and copied ones (a copy names another digest), and returns
// the newest valid one by signed time.
package statement

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"
	"unicode/utf8"

	"github.com/berth-dev/berth/policy/rollout"
)

// PredicateType is the in-toto predicate type of rollout statements.
const PredicateType = "https://berth.dev/rollout/statement/v1"

// MaxReason is the longest reason a statement carries, in bytes.
const MaxReason = 1024

// maxPredicate bounds a predicate parsed.
const maxPredicate = 4096

// Statement is what CI says about a release.
type Statement struct {
	// Action is pause, resume or abort.
	Action rollout.Action `json:"action"`
	// Digest is the release's manifest digest, sha256:<64 hex>.
	Digest string `json:"digest"`
	// SignedAt is when the statement was signed: the newest one wins.
	SignedAt time.Time `json:"signedAt"`
	// Reason says why, for people; optional.
	Reason string `json:"reason,omitempty"`
}

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// Check returns why s is not a valid statement, or nil.
func (s Statement) Check() error {
	if _, err := rollout.ParseAction(string(s.Action)); err != nil {
		return err
	}
	switch {
	case !digestRE.MatchString(s.Digest):
		return fmt.Errorf("digest %q: want sha256: and 64 lowercase hex digits", s.Digest)
	case s.SignedAt.IsZero():
		return errors.New("no signedAt time")
	case len(s.Reason) > MaxReason:
		return fmt.Errorf("reason is %d bytes, at most %d", len(s.Reason), MaxReason)
	case !utf8.ValidString(s.Reason):
		return errors.New("reason is not UTF-8")
	}
	return nil
}

// Predicate returns the statement as the predicate that is signed, its
// time in UTC to the second.
func (s Statement) Predicate() ([]byte, error) {
	s.SignedAt = s.SignedAt.UTC().Truncate(time.Second)
	if err := s.Check(); err != nil {
		return nil, fmt.Errorf("statement: %w", err)
	}
	return json.Marshal(s)
}

// Parse parses a predicate strictly: one JSON object with known fields
// only, a valid action, digest and time.
func Parse(predicate []byte) (Statement, error) {
	var s Statement
	if len(predicate) > maxPredicate {
		return s, fmt.Errorf("statement is %d bytes, at most %d", len(predicate), maxPredicate)
	}
	dec := json.NewDecoder(bytes.NewReader(predicate))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Statement{}, fmt.Errorf("statement: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Statement{}, errors.New("statement: data after the JSON object")
	}
	if err := s.Check(); err != nil {
		return Statement{}, fmt.Errorf("statement: %w", err)
	}
	return s, nil
}

// severity orders statements signed at the same second: abort, then
// pause, then resume, so that a tie errs on the safe side.
func severity(a rollout.Action) int {
	switch a {
	case rollout.Abort:
		return 3
	case rollout.Pause:
		return 2
	case rollout.Resume:
		return 1
	}
	return 0
}

// Newer reports whether s wins over o: signed later, or at the same time
// with a stronger action.
func (s Statement) Newer(o Statement) bool {
	if !s.SignedAt.Equal(o.SignedAt) {
		return s.SignedAt.After(o.SignedAt)
	}
	return severity(s.Action) > severity(o.Action)
}
