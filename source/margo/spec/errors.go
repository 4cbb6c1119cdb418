package spec

import (
	"errors"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/internal/errdef"
)

// Sentinel errors; every parse error wraps one of them.
var (
	// ErrInvalidManifest reports a State Manifest that is not valid JSON or
	// breaks the rules of the spec.
	ErrInvalidManifest = errdef.Refusal("invalid Margo State Manifest")
	// ErrInvalidDeployment reports an ApplicationDeployment that is not
	// valid YAML or breaks the rules of the spec.
	ErrInvalidDeployment = errdef.Refusal("invalid Margo ApplicationDeployment")
	// ErrInvalidProblem reports an error body that is not a problem+json
	// object.
	ErrInvalidProblem = errors.New("invalid problem+json body")
	// ErrInvalidBody reports a capabilities or status body that breaks the
	// rules of the spec (a bug of the caller, found before sending).
	ErrInvalidBody = errors.New("invalid Margo request body")
	// ErrNotEligible reports a device that does not meet the device
	// constraints of a deployment profile.
	ErrNotEligible = errors.New("device not eligible")
)

// FieldError is one problem of a JSON document at a field path (such as
// deployments[2].digest).
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

// problems collects FieldErrors and joins them under a sentinel.
type problems struct {
	list []*FieldError
}

func (p *problems) add(field, format string, args ...any) {
	p.list = append(p.list, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (p *problems) failed() bool { return len(p.list) > 0 }

// err returns nil or an error wrapping kind whose message lists every
// problem: "<what>: field: msg; field: msg".
func (p *problems) err(kind error, what string) error {
	if len(p.list) == 0 {
		return nil
	}
	msgs := make([]string, len(p.list))
	errs := make([]error, 0, len(p.list)+1)
	errs = append(errs, kind)
	for i, e := range p.list {
		msgs[i] = e.Error()
		errs = append(errs, e)
	}
	return &joined{msg: what + ": " + strings.Join(msgs, "; "), errs: errs}
}

type joined struct {
	msg  string
	errs []error
}

func (j *joined) Error() string   { return j.msg }
func (j *joined) Unwrap() []error { return j.errs }
