package bundle

import (
	"errors"

	"github.com/berth-dev/berth/internal/errdef"
	"github.com/berth-dev/berth/source/oci"
)

// Sentinel errors. Callers branch on them with errors.Is.
var (
	// ErrInvalidBundle is returned for a file that is not a well-formed
	// bundle: not a tar, unsafe or unexpected tar entries, a malformed or
	// oversized index.json or manifest, missing blobs.
	ErrInvalidBundle = errdef.Refusal("invalid bundle")
	// ErrDigestMismatch is returned when content does not match its
	// digest. It is oci.ErrDigestMismatch, so either matches.
	ErrDigestMismatch = oci.ErrDigestMismatch
	// ErrNotFound is returned when a reference, manifest or blob is not in
	// the bundle. It is oci.ErrNotFound.
	ErrNotFound = oci.ErrNotFound
	// ErrTooLarge is returned when a manifest or index.json exceeds its
	// size cap. It is oci.ErrTooLarge.
	ErrTooLarge = oci.ErrTooLarge
	// ErrIncomplete is returned by Push when the target registry refused
	// manifests (an index whose children the bundle leaves out): everything
	// else was pushed.
	ErrIncomplete = errors.New("bundle pushed incompletely")
)
