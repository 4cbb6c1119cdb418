package oci

import "errors"

// Sentinel errors. Callers branch on them with errors.Is.
var (
	// ErrInvalidReference is returned for a reference berth cannot parse.
	ErrInvalidReference = errors.New("invalid reference")
	// ErrNotFound is returned when a tag, manifest or blob does not exist.
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized is returned when the registry refuses the credentials.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrNoLayer is returned when an artifact has no layer berth can extract.
	ErrNoLayer = errors.New("no content layer")
	// ErrTooLarge is returned when a manifest or blob exceeds its size cap.
	ErrTooLarge = errors.New("too large")
	// ErrDigestMismatch is returned when content does not match its digest.
	ErrDigestMismatch = errors.New("digest mismatch")
)
