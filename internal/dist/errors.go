package dist

import "errors"

var (
	// ErrPlatform is returned for a platform dist cannot build.
	ErrPlatform = errors.New("bad platform")
	// ErrMissing is returned when a file a package needs is missing.
	ErrMissing = errors.New("missing file")
)
