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
	// ErrTooManyTags is returned when a tag listing passes its caps
	// (Options.MaxTags, Options.MaxTagPages).
	ErrTooManyTags = errdef.Refusal("too many tags")
	// ErrDigestMismatch is returned when content arrived whole and does
	// not match its digest, or is longer than its descriptor says.
	ErrDigestMismatch = errdef.Refusal("digest mismatch")
	// ErrTruncated is returned when a response body ended before the size
	// its descriptor gives: a transport failure (a cut connection, a proxy
	// giving up), not a refusal of the content.
	ErrTruncated = errors.New("truncated")
	// ErrSlow is returned when a download left a repository that served it
	// too slowly (BlobOptions.SlowWindow): a transport failure.
	ErrSlow = errors.New("too slow")
)
