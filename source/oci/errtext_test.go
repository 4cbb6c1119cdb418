package oci

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"oras.land/oras-go/v2/registry/remote/errcode"
)

// TestRegistryErrorsInPlainWords: a registry error's detail is printed as
// words, not as a Go map (issue 14, point 12).
func TestRegistryErrorsInPlainWords(t *testing.T) {
	resp := &errcode.ErrorResponse{Method: http.MethodGet, URL: mustURL(t, "https://r.example/v2/me/bad/tags/list"), StatusCode: 404,
		Errors: errcode.Errors{{Code: "NAME_UNKNOWN", Message: "repository name not known to registry", Detail: map[string]any{"name": "me/bad"}}}}
	err := classify(fmt.Errorf("list tags of r.example/me/bad: %w", resp))
	msg := err.Error()
	if strings.Contains(msg, "map[") || !strings.Contains(msg, "name unknown: repository name not known to registry (name me/bad)") || !strings.HasPrefix(msg, "list tags of r.example/me/bad: GET https://r.example/v2/me/bad/tags/list: 404:") {
		t.Errorf("message %q", msg)
	}
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("%v is no longer ErrNotFound", err)
	}
	var got *errcode.ErrorResponse
	if !errors.As(err, &got) || got != resp {
		t.Error("the error response left the chain")
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
