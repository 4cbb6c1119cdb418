package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/errdef"
)

// Name names the endpoint in logs and errors: "source", or "mirror" and
// the mirror prefix.
func (e Endpoint) Name() string {
	if e.Mirror == "" {
		return "source"
	}
	return "mirror " + e.Mirror
}

// Options shape a Try.
type Options struct {
	// What names the fetch in errors and logs, such as "manifest
	// oci://ghcr.io/acme/fleet@sha256:…" or "pull ghcr.io/acme/web:1.0@sha256:…".
	What string
	// Timeout bounds each endpoint's attempt (the context fetch receives);
	// 0 leaves only ctx's deadline. A fetch that returns a stream read after
	// it returns must not use it: its context ends when fetch returns.
	Timeout time.Duration
	// Log, when set, gets a warning for each endpoint that failed when
	// another follows, and a note when a later endpoint served.
	Log *slog.Logger
	// Final, when set, reports further errors that end the search (besides
	// refused content and the end of ctx).
	Final func(error) bool
}

// Try is the failover of every fetch: it calls fetch on the endpoints in
// order until one succeeds, and returns its result and the endpoint's
// index. How each failure is classified:
//
//   - refused content (errors.Is(err, errdef.ErrRefused): bytes that do
//     not match their digest, content over a cap) ends the search at once:
//     no endpoint can serve other bytes for the same digest;
//   - so does the end of ctx, and an error for which Options.Final says so;
//   - any other failure (not found, unreachable, refused credentials, a
//     reset, a timeout) passes to the next endpoint.
//
// The error of a search that ended early is the endpoint's error as it
// is; so is the error of the only endpoint when it is the source (no
// mirror applies). Otherwise, when no endpoint served, the error is a
// *TriedError naming every endpoint's failure in order.
func Try[T any](ctx context.Context, eps []Endpoint, o Options, fetch func(context.Context, Endpoint) (T, error)) (T, int, error) {
	var zero T
	var errs []error
	for i, ep := range eps {
		v, err := attempt(ctx, ep, o.Timeout, fetch)
		if err == nil {
			if i > 0 && o.Log != nil {
				o.Log.Info("served by a later registry", "fetch", o.What, "endpoint", ep.Name())
			}
			return v, i, nil
		}
		if (len(eps) == 1 && ep.Mirror == "") || ctx.Err() != nil || errors.Is(err, errdef.ErrRefused) || (o.Final != nil && o.Final(err)) {
			return zero, i, err
		}
		if i < len(eps)-1 && o.Log != nil {
			o.Log.Warn("fetch failed, trying the next registry", "fetch", o.What, "endpoint", ep.Name(), "error", err)
		}
		errs = append(errs, &EndpointError{Endpoint: ep, Err: err})
	}
	te := &TriedError{What: o.What, Errs: errs}
	if len(eps) > 0 && !hasSource(eps) {
		te.NoFallback = eps[0].Set
	}
	return zero, -1, te
}

func attempt[T any](ctx context.Context, ep Endpoint, timeout time.Duration, fetch func(context.Context, Endpoint) (T, error)) (T, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return fetch(ctx, ep)
}

func hasSource(eps []Endpoint) bool {
	for _, e := range eps {
		if e.Mirror == "" {
			return true
		}
	}
	return false
}

// StartAt returns eps with eps[i] first and the others in their order: a
// fetch that follows another (a layer after its manifest) asks the
// endpoint that served first.
func StartAt(eps []Endpoint, i int) []Endpoint {
	if i <= 0 || i >= len(eps) {
		return eps
	}
	out := make([]Endpoint, 0, len(eps))
	out = append(out, eps[i])
	out = append(out, eps[:i]...)
	return append(out, eps[i+1:]...)
}

// EndpointError is the failure of a fetch on one endpoint.
type EndpointError struct {
	Endpoint Endpoint
	Err      error
}

func (e *EndpointError) Error() string {
	name := e.Endpoint.Name()
	if e.Endpoint.Mirror == "" {
		host, _, _ := strings.Cut(e.Endpoint.Ref, "/")
		name += " " + host
	}
	return "[" + name + "] " + e.Err.Error()
}
func (e *EndpointError) Unwrap() error { return e.Err }

// TriedError is the failure of a fetch that no endpoint served: every
// endpoint's error, in the order tried.
type TriedError struct {
	// What names the fetch (Options.What).
	What string
	// Errs are *EndpointError values, one per endpoint tried.
	Errs []error
	// NoFallback is the Source of the mirror set that kept the source
	// registry out of the endpoints (sourceFallback off); "" when the
	// source was tried.
	NoFallback string
}

func (e *TriedError) Error() string {
	s := fmt.Sprintf("%s: no registry served it; tried in order: %s", e.What, e.Tried())
	if e.NoFallback != "" {
		s += "; the source registry was not tried: sourceFallback is off for " + e.NoFallback + " in registries:"
	}
	return s
}

// Tried lists the endpoints' errors in order, on one line.
func (e *TriedError) Tried() string {
	msgs := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap returns the endpoints' errors, so that errors.Is finds any of
// them.
func (e *TriedError) Unwrap() []error { return e.Errs }

// All reports whether every endpoint failed with an error matching target.
func (e *TriedError) All(target error) bool {
	for _, err := range e.Errs {
		if !errors.Is(err, target) {
			return false
		}
	}
	return len(e.Errs) > 0
}
