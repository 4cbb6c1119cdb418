package oci

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode"

	"oras.land/oras-go/v2/registry/remote/errcode"
)

// plainDetails rewrites the registry's error response inside err in plain
// words: oras-go prints an error's detail as a Go value
// ("map[name:me/bad]"); this prints "(name me/bad)". The chain is kept.
func plainDetails(err error) error {
	var resp *errcode.ErrorResponse
	if !errors.As(err, &resp) || len(resp.Errors) == 0 {
		return err
	}
	parts := make([]string, len(resp.Errors))
	for i, e := range resp.Errors {
		parts[i] = describeErrcode(e)
	}
	text := fmt.Sprintf("%s %s: %d: %s", resp.Method, resp.URL, resp.StatusCode, strings.Join(parts, "; "))
	return &reworded{err: err, text: strings.Replace(err.Error(), resp.Error(), text, 1)}
}

// describeErrcode is "code words: message (detail)".
func describeErrcode(e errcode.Error) string {
	code := strings.Map(func(r rune) rune {
		if r == '_' {
			return ' '
		}
		return unicode.ToLower(r)
	}, e.Code)
	s := code
	if e.Message != "" {
		s += ": " + e.Message
	}
	if d := describeDetail(e.Detail); d != "" {
		s += " (" + d + ")"
	}
	return s
}

func describeDetail(d any) string {
	switch v := d.(type) {
	case nil:
		return ""
	case string:
		return v
	case map[string]any:
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(v)) {
			kv = append(kv, k+" "+describeDetail(v[k]))
		}
		return strings.Join(kv, ", ")
	case []any:
		var items []string
		for _, x := range v {
			items = append(items, describeDetail(x))
		}
		return strings.Join(items, ", ")
	}
	return fmt.Sprint(d)
}

// reworded is err with another text.
type reworded struct {
	err  error
	text string
}

func (r *reworded) Error() string { return r.text }
func (r *reworded) Unwrap() error { return r.err }
