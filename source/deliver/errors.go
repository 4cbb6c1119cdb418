package deliver

import (
	"errors"

	"github.com/berth-dev/berth/internal/errdef"
)

// ErrUnverified is the refusal of an artifact whose digest carries no
// signature the policy accepts. The error that wraps it says why, in
// cosign's words (errors.Is finds cosign.ErrNoSignature and the others).
var ErrUnverified = errdef.Refusal("no signature verified")

// ErrNoSpace is returned when a pull would leave less free disk space than
// ExtractOptions.MinFree: it is not started. Not a refusal of the content:
// the pull is tried again later.
var ErrNoSpace = errors.New("not enough free disk space")

// errNoPolicy is a caller's mistake: content is extracted only when a
// policy verified it, or when the caller opted out explicitly.
var errNoPolicy = errors.New("no trust policy given: give the public key(s) to verify with, or opt out explicitly of verification")
