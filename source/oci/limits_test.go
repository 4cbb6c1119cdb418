package oci

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/errdef"
)

// endlessTags serves tags/list pages of 100 tags, each with a Link to the
// next, forever; it counts the pages served.
func endlessTags(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	var pages atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/tags/list") {
			http.NotFound(w, r)
			return
		}
		n := pages.Add(1)
		var tags []string
		for i := range 100 {
			tags = append(tags, fmt.Sprintf(`"v%d.%d.0"`, n, i))
		}
		w.Header().Set("Link", fmt.Sprintf(`</v2/fleet/app/tags/list?n=100&last=v%d.99.0>; rel="next"`, n))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"name":"fleet/app","tags":[%s]}`, strings.Join(tags, ","))
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), &pages
}

// TestTagsCaps: a registry whose tag pages never end is read up to the
// caps, with an error naming them (issue 11: 1 GB of RSS within one
// timeout).
func TestTagsCaps(t *testing.T) {
	host, pages := endlessTags(t)
	ref, _ := ParseReference("oci://" + host + "/fleet/app")
	for _, tc := range []struct {
		name      string
		opts      Options
		want      string
		wantPages int64
	}{
		{"tag cap", Options{MaxTags: 1000}, "more than 1000 tags, the cap", 11},
		{"page cap", Options{MaxTagPages: 5}, "more than 5 pages, the cap", 5},
		{"defaults", Options{}, fmt.Sprintf("more than %d tags, the cap", DefaultMaxTags), DefaultMaxTags/100 + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Insecure = true
			tc.opts.DockerConfig = t.TempDir() + "/config.json"
			c, err := NewClient(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			pages.Store(0)
			tags, err := c.Tags(context.Background(), ref)
			if !errors.Is(err, ErrTooManyTags) || !errors.Is(err, errdef.ErrRefused) || !strings.Contains(err.Error(), tc.want) || tags != nil {
				t.Fatalf("Tags = %d tags, %v; want ErrTooManyTags with %q", len(tags), err, tc.want)
			}
			if got := pages.Load(); got != tc.wantPages {
				t.Errorf("%d pages read, want %d", got, tc.wantPages)
			}
		})
	}
}

// TestManifestCap: a manifest or referrers answer over MaxManifestSize is
// refused, with or without a Content-Length, without reading it whole.
func TestManifestCap(t *testing.T) {
	const d = "sha256:" + "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12"
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
		w.Header().Set("Docker-Content-Digest", d)
		if r.URL.Query().Get("length") == "declared" || strings.Contains(r.URL.Path, "declared") {
			w.Header().Set("Content-Length", fmt.Sprint(64<<20))
		}
		chunk := []byte(strings.Repeat(" ", 32<<10))
		for range (64 << 20) / len(chunk) {
			n, err := w.Write(chunk)
			served.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	c := newClient(t)
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, path := range []string{"/v2/fleet/declared/manifests/" + d, "/v2/fleet/chunked/manifests/" + d, "/v2/fleet/chunked/referrers/" + d} {
		served.Store(0)
		resp, err := c.http.Get(srv.URL + path)
		var rerr error
		if err == nil {
			buf := make([]byte, 1<<20)
			for rerr == nil {
				_, rerr = resp.Body.Read(buf)
			}
			resp.Body.Close()
		} else {
			rerr = err
		}
		if !errors.Is(rerr, ErrTooLarge) {
			t.Errorf("%s: %v, want ErrTooLarge", path, rerr)
		}
		if n := served.Load(); n > 16<<20 {
			t.Errorf("%s: %d bytes served before the refusal", path, n)
		}
	}
	ref, _ := ParseReference("oci://" + host + "/fleet/declared@" + d)
	if _, _, err := c.Manifest(context.Background(), ref); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Manifest: %v, want ErrTooLarge", err)
	}
}
