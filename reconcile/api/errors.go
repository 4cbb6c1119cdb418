package api

import "errors"

// Sentinel errors of the API. The server maps them to status codes and the
// client maps status codes back to them, so errors.Is works across the
// socket.
var (
	// ErrUnknownSource: no source of that name is configured (404).
	ErrUnknownSource = errors.New("unknown source")
	// ErrConflict: the request cannot be done in the source's present state,
	// for example a rollback with no earlier revision to go back to (409).
	ErrConflict = errors.New("conflict")
	// ErrNoAgent: no agent listens on the socket (the socket is missing or
	// refuses connections); the CLI falls back to reading state.json.
	ErrNoAgent = errors.New("no agent is running")
)
