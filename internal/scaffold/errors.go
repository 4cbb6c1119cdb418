package scaffold

import "errors"

var (
	// ErrExists is returned when a file init would write exists.
	ErrExists = errors.New("files exist")
	// ErrInvalid is returned for an option that cannot be written.
	ErrInvalid = errors.New("invalid option")
)
