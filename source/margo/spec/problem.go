package spec

import (
	"fmt"
	"strconv"
	"strings"
)

// ProblemTypePrefix is the prefix of the Margo problem types.
const ProblemTypePrefix = "https://docs.margo.org/specification/problem-types#"

// Margo problem types (PT @3d88f32). Clients key on Type; an unknown type
// falls back to Title, Detail and Status.
const (
	ProblemInvalidRequest      = ProblemTypePrefix + "invalid-request"
	ProblemSemanticError       = ProblemTypePrefix + "semantic-error"
	ProblemNotAuthorized       = ProblemTypePrefix + "not-authorized"
	ProblemGatewayNotFound     = ProblemTypePrefix + "gateway-not-found"
	ProblemDeviceNotFound      = ProblemTypePrefix + "device-not-found"
	ProblemInvalidBundle       = ProblemTypePrefix + "invalid-bundle"
	ProblemDeploymentNotFound  = ProblemTypePrefix + "deployment-not-found"
	ProblemCannotGenerate      = ProblemTypePrefix + "server-cannot-generate-response"
	ProblemAboutBlank          = "about:blank"
	maxProblemText             = 1024
	maxProblemErrors           = 64
	BackoffExponential         = "exponential"
	BackoffNone                = "none"
	MaxProblemSize             = 64 << 10
	defaultProblemFallbackType = ProblemAboutBlank
)

// Problem is an RFC 9457 problem details object with the Margo members.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title,omitempty"`
	Status   int    `json:"status,omitempty"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	// Retryable is nil when the body does not say.
	Retryable *bool `json:"retryable,omitempty"`
	// RetryAfterSeconds is nil when the body does not say.
	RetryAfterSeconds *uint64 `json:"retryAfterSeconds,omitempty"`
	// BackoffStrategy is "exponential", "none" or empty.
	BackoffStrategy string              `json:"backoffStrategy,omitempty"`
	Errors          []ProblemFieldError `json:"errors,omitempty"`
}

// ProblemFieldError is one entry of a problem's errors.
type ProblemFieldError struct {
	Field   string `json:"field,omitempty"`
	Message string `json:"message,omitempty"`
}

// ParseProblem parses a problem+json body. It is lenient where RFC 9457
// is: unknown members are extension members and ignored, a missing type is
// about:blank; but members of the wrong type are an error, text members
// are cut to 1 KiB and errors to 64 entries (they end up in logs).
func ParseProblem(data []byte) (*Problem, error) {
	if len(data) > MaxProblemSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidProblem, MaxProblemSize)
	}
	v, err := decodeJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidProblem, err)
	}
	p := &problems{}
	o := object(p, "", v)
	if o == nil {
		return nil, p.err(ErrInvalidProblem, ErrInvalidProblem.Error())
	}
	pr := &Problem{Type: defaultProblemFallbackType}
	if t, ok := o.str("type", false); ok && t != "" {
		pr.Type = clip(t)
	}
	pr.Title, _ = o.str("title", false)
	pr.Detail, _ = o.str("detail", false)
	pr.Instance, _ = o.str("instance", false)
	pr.Title, pr.Detail, pr.Instance = clip(pr.Title), clip(pr.Detail), clip(pr.Instance)
	if st, ok := o.uint64("status", false); ok {
		if st < 100 || st > 599 {
			p.add("status", "must be an HTTP status code, got %d", st)
		}
		pr.Status = int(min(st, 999))
	}
	if b, ok := o.boolean("retryable"); ok {
		pr.Retryable = &b
	}
	if ra, ok := o.uint64("retryAfterSeconds", false); ok {
		pr.RetryAfterSeconds = &ra
	}
	if bs, ok := o.str("backoffStrategy", false); ok {
		pr.BackoffStrategy = clip(bs)
	}
	if ev, ok := o.get("errors", false); ok && ev != nil {
		list, isList := ev.([]any)
		if !isList {
			p.add("errors", "must be an array, got %s", describe(ev))
		}
		for i, item := range list {
			if i >= maxProblemErrors {
				break
			}
			eo := object(p, index("errors", i), item)
			if eo == nil {
				continue
			}
			f, _ := eo.str("field", false)
			m, _ := eo.str("message", false)
			pr.Errors = append(pr.Errors, ProblemFieldError{Field: clip(f), Message: clip(m)})
		}
	}
	if p.failed() {
		return nil, p.err(ErrInvalidProblem, ErrInvalidProblem.Error())
	}
	return pr, nil
}

func clip(s string) string {
	if len(s) > maxProblemText {
		return s[:maxProblemText] + "…"
	}
	return s
}

// Is reports whether the problem is of the Margo type name (such as
// "not-authorized"), written with or without the prefix.
func (p *Problem) Is(name string) bool {
	return p.Type == name || p.Type == ProblemTypePrefix+name
}

// String is a one-line summary: "status title: detail (type)", with the
// field errors.
func (p *Problem) String() string {
	var b strings.Builder
	if p.Status != 0 {
		b.WriteString(strconv.Itoa(p.Status))
		b.WriteString(" ")
	}
	title := p.Title
	if title == "" {
		title = strings.TrimPrefix(p.Type, ProblemTypePrefix)
	}
	b.WriteString(title)
	if p.Detail != "" {
		b.WriteString(": ")
		b.WriteString(p.Detail)
	}
	if p.Type != ProblemAboutBlank && p.Title != "" {
		fmt.Fprintf(&b, " (%s)", strings.TrimPrefix(p.Type, ProblemTypePrefix))
	}
	for _, e := range p.Errors {
		fmt.Fprintf(&b, "; %s: %s", e.Field, e.Message)
	}
	return b.String()
}
