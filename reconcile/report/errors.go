package report

import "errors"

// ErrOptions is wrapped by the errors New returns for invalid Options.
var ErrOptions = errors.New("invalid report options")

// errRejected marks a request the endpoint refused for what it holds (HTTP
// 4xx other than 429): sending it again would fail the same way.
var errRejected = errors.New("rejected by the remote-write endpoint")

// errCorrupt marks a queued record that cannot be read back.
var errCorrupt = errors.New("corrupt queue record")
