package selector

import "errors"

// Sentinel errors of this package, returned wrapped with the details. Branch
// on them with errors.Is; the message is meant for humans.
var (
	// ErrNoMatch means that no tag of the list satisfies the policy. The
	// wrapping error says how many tags were considered and what the policy
	// was, such as: no tag of 37 matches semver ">=2.0.0".
	ErrNoMatch = errors.New("no matching tag")

	// ErrInvalidPolicy means that New refused a Policy. Every problem is a
	// *PolicyError that wraps it.
	ErrInvalidPolicy = errors.New("invalid tag policy")

	// ErrInvalidVersion means that CompareVersions was given a string that
	// is not a semantic version.
	ErrInvalidVersion = errors.New("invalid semantic version")
)

// PolicyError is one problem of one field of a Policy. It wraps
// ErrInvalidPolicy.
type PolicyError struct {
	// Field is the field at fault, named as in the agent's configuration:
	// "semver", "semverFilter", "pattern", "extract", "order" or
	// "direction".
	Field string
	// Msg says what is wrong, without the field name.
	Msg string
}

// Error returns "field: msg".
func (e *PolicyError) Error() string { return e.Field + ": " + e.Msg }

// Unwrap returns ErrInvalidPolicy.
func (e *PolicyError) Unwrap() error { return ErrInvalidPolicy }

// msgError is an error with its own message that wraps a sentinel.
type msgError struct {
	msg string
	err error
}

// Error returns the message.
func (e *msgError) Error() string { return e.msg }

// Unwrap returns the sentinel.
func (e *msgError) Unwrap() error { return e.err }

// PolicyErrors returns the PolicyErrors in err, an error of New (which
// joins one for every problem it finds), in order; none when err holds no
// PolicyError.
func PolicyErrors(err error) []*PolicyError {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	var out []*PolicyError
	for _, e := range errs {
		var pe *PolicyError
		if errors.As(e, &pe) {
			out = append(out, pe)
		}
	}
	return out
}
