package oci

import (
	"errors"

	"github.com/berth-dev/berth/internal/errdef"
)

// Sentinel errors. Callers branch on them with errors.Is.
var (
	// ErrPlainHTTP is returned when a registry that is not on loopback
	// answers plain HTTP to HTTPS.
	ErrPlainHTTP = errors.New("the registry speaks plain HTTP, not HTTPS: allow it with --insecure (berth commands) or insecure: true (a source in agent.yaml); registries on loopback need neither")
	// ErrInvalidReference is returned for a reference berth cannot parse.
	ErrInvalidReference = errors.New("invalid reference")
	// ErrNotFound is returned when a tag, manifest or blob does not exist.
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized is returned when the registry refuses the credentials.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrNoLayer is returned when an artifact has no layer berth can extract.
	ErrNoLayer = errdef.Refusal("no content layer")
	// ErrTooLarge is returned when a manifest or blob exceeds its size cap.
	ErrTooLarge = errdef.Refusal("too large")
	// ErrDigestMismatch is returned when content does not match its digest.
	ErrDigestMismatch = errdef.Refusal("digest mismatch")
)
