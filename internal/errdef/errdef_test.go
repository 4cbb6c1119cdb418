package errdef

import (
	"errors"
	"fmt"
	"testing"
)

func TestRefusal(t *testing.T) {
	a, b := Refusal("digest mismatch"), Refusal("too large")
	wrapped := fmt.Errorf("layer sha256:00 of x: %w", a)
	for _, tc := range []struct {
		name   string
		err    error
		target error
		want   bool
	}{
		{"sentinel is in the class", a, ErrRefused, true},
		{"wrapped sentinel is in the class", wrapped, ErrRefused, true},
		{"wrapped sentinel is itself", wrapped, a, true},
		{"two refusals are distinct", wrapped, b, false},
		{"joined refusal", errors.Join(errors.New("x"), b), ErrRefused, true},
		{"a plain error is not refused", errors.New("connection reset"), ErrRefused, false},
		{"the class is not a sentinel", ErrRefused, a, false},
	} {
		if got := errors.Is(tc.err, tc.target); got != tc.want {
			t.Errorf("%s: errors.Is = %v, want %v", tc.name, got, tc.want)
		}
	}
	if a.Error() != "digest mismatch" {
		t.Errorf("message = %q", a.Error())
	}
}

func TestRefuse(t *testing.T) {
	cause := errors.New("no signature found")
	err := fmt.Errorf("verify x: %w", Refuse(cause))
	if !errors.Is(err, ErrRefused) || !errors.Is(err, cause) || err.Error() != "verify x: no signature found" {
		t.Errorf("Refuse: %v (refused %v, cause %v)", err, errors.Is(err, ErrRefused), errors.Is(err, cause))
	}
	if Refuse(nil) != nil {
		t.Error("Refuse(nil) is not nil")
	}
}
