// Package errdef holds the classes of errors that callers across packages
// branch on, in the manner of oras-go's errdef: a sentinel that errors.Is
// finds whichever package produced the error.
//
// ErrRefused is the class of content refused for what it is: bytes that
// do not hash to their digest, an artifact over a size cap, an archive entry
// that leaves its folder. No other endpoint can serve other bytes for the
// same digest, so a refused fetch is not tried elsewhere, and the reconcile
// that met it ends as "refused". Every other failure (not found,
// unreachable, reset, timeout) is a transport failure: the next endpoint is
// tried, and the reconcile is retried later.
//
// A package declares its refusal sentinels with Refusal, so that both
// errors.Is(err, pkg.ErrX) and errors.Is(err, errdef.ErrRefused) hold:
//
//	var ErrDigestMismatch = errdef.Refusal("digest mismatch")
package errdef

import "errors"

// ErrRefused is the class of refused content (see the package
// documentation). Test for it with errors.Is.
var ErrRefused = errors.New("content refused")

// Refusal returns a new sentinel error with the message msg that belongs to
// the ErrRefused class. Each call returns a distinct error.
func Refusal(msg string) error { return &refusal{msg: msg} }

type refusal struct{ msg string }

func (e *refusal) Error() string { return e.msg }

// Is makes every refusal match the class.
func (e *refusal) Is(target error) bool { return target == ErrRefused }

// Refuse marks err as refused content without changing its message: for
// an error whose cause (a signature that does not verify, say) comes from
// a package that has no refusal sentinels of its own. Refuse(nil) is nil.
func Refuse(err error) error {
	if err == nil {
		return nil
	}
	return &refused{err: err}
}

type refused struct{ err error }

func (e *refused) Error() string        { return e.err.Error() }
func (e *refused) Unwrap() error        { return e.err }
func (e *refused) Is(target error) bool { return target == ErrRefused }
