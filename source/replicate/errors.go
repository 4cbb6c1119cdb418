package replicate

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"syscall"

	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// Sentinel errors. Branch on them with errors.Is; the wrapping error says
// which repository, tag and target.
var (
	// ErrUpstream means the upstream repository could not be read: the
	// registry is down, refuses the credentials, or the repository is
	// gone. The job's targets are left as they were.
	ErrUpstream = errors.New("upstream unavailable")
	// ErrTagNotFound means an explicitly listed tag does not exist at the
	// upstream.
	ErrTagNotFound = errors.New("tag not found at the upstream")
	// ErrCopy means copying to a target failed.
	ErrCopy = errors.New("copy failed")
	// ErrCycle means the jobs copy in a cycle.
	ErrCycle = errors.New("jobs copy in a cycle")
)

// wrapErr is an error with its own message that wraps a sentinel and the
// cause.
type wrapErr struct {
	kind error
	msg  string
	err  error
}

func (e *wrapErr) Error() string   { return e.msg }
func (e *wrapErr) Unwrap() []error { return []error{e.kind, e.err} }

// failure wraps err in the sentinel kind with a message saying what was
// being done, and a hint for the common causes.
func failure(kind error, what string, err error) error {
	return &wrapErr{kind: kind, msg: fmt.Sprintf("%s: %v%s", what, err, hint(err)), err: err}
}

// isNotFound reports whether err says that a manifest, tag or repository
// does not exist.
func isNotFound(err error) bool {
	if errors.Is(err, errdef.ErrNotFound) {
		return true
	}
	var resp *errcode.ErrorResponse
	return errors.As(err, &resp) && resp.StatusCode == http.StatusNotFound
}

// hint says what to do about the common registry failures.
func hint(err error) string {
	var resp *errcode.ErrorResponse
	code := 0
	if errors.As(err, &resp) {
		code = resp.StatusCode
	}
	var uae x509.UnknownAuthorityError
	switch {
	case code == http.StatusUnauthorized || code == http.StatusForbidden || errors.Is(err, auth.ErrBasicCredentialNotFound):
		return " (log in with `berth login HOST` or pass --docker-config)"
	case errors.As(err, &uae):
		return " (the registry's certificate is not trusted: pass --ca-file, or set caFile for the host under registries:)"
	case errors.Is(err, syscall.ECONNREFUSED):
		return " (is the registry running? check the host and port)"
	}
	return ""
}
