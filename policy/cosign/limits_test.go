package cosign

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/berth-dev/berth/internal/errdef"
)

// countingRegistry is an in-memory registry counting the GET requests of
// manifests and blobs.
func countingRegistry(t *testing.T, referrers bool) (string, *atomic.Int64) {
	t.Helper()
	var gets atomic.Int64
	reg := registry.New(registry.WithReferrersSupport(referrers), registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && (strings.Contains(r.URL.Path, "/blobs/") || strings.Contains(r.URL.Path, "/manifests/sha256:")) {
			gets.Add(1)
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), &gets
}

// TestVerifyLimits: a registry piling up signatures that do not verify
// makes verification check at most MaxSignatures of them, and the error
// names the cap; a signature that verifies within the cap still wins.
func TestVerifyLimits(t *testing.T) {
	for _, mode := range registryModes {
		for _, f := range formats {
			t.Run(fmt.Sprintf("%s/%s", mode.name, f), func(t *testing.T) {
				t.Parallel()
				host, gets := countingRegistry(t, mode.referrers)
				d, _ := pushImage(t, host)
				const bogus = 8
				for i := range bogus {
					mustSign(t, d, newTestKey(t, fmt.Sprintf("bogus%d.pub", i)), f)
				}
				trusted := newTestKey(t, "trusted.pub")
				p := Policy{Keys: []Key{trusted.key}, Limits: Limits{MaxSignatures: 3}}
				gets.Store(0)
				_, err := VerifyPolicy(context.Background(), d, p)
				if !errors.Is(err, ErrTooManySignatures) || !errors.Is(err, errdef.ErrRefused) {
					t.Fatalf("err = %v, want ErrTooManySignatures (a refusal)", err)
				}
				if !strings.Contains(err.Error(), "checked 3 signatures, the cap") {
					t.Errorf("the error does not name the cap: %v", err)
				}
				// Each bundle is a manifest and a blob; the legacy .sig
				// tag one manifest and a payload blob per layer.
				if n := gets.Load(); n > 2*3+2 {
					t.Errorf("%d manifest and blob GETs for 3 signatures checked", n)
				}
				// Without the cap every signature is looked at: key mismatch.
				if _, err := VerifyPolicy(context.Background(), d, Policy{Keys: []Key{trusted.key}}); !errors.Is(err, ErrKeyMismatch) {
					t.Errorf("default cap: %v, want ErrKeyMismatch", err)
				}
				// A trusted signature within the cap verifies.
				d2, _ := pushImage(t, host)
				mustSign(t, d2, trusted, f)
				mustSign(t, d2, newTestKey(t, "other.pub"), f)
				if _, err := VerifyPolicy(context.Background(), d2, Policy{Keys: []Key{trusted.key}, Limits: Limits{MaxSignatures: 2}}); err != nil {
					t.Errorf("trusted signature within the cap: %v", err)
				}
			})
		}
	}
}

// TestVerifyReferrersCap: a referrers index longer than MaxReferrers is
// looked at up to the cap only.
func TestVerifyReferrersCap(t *testing.T) {
	for _, mode := range registryModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			host := startRegistry(t, mode.referrers)
			d, _ := pushImage(t, host)
			for i := range 4 {
				mustSign(t, d, newTestKey(t, fmt.Sprintf("bogus%d.pub", i)), FormatBundle)
			}
			_, err := VerifyPolicy(context.Background(), d, Policy{Keys: []Key{newTestKey(t, "k.pub").key}, Limits: Limits{MaxReferrers: 2}})
			if !errors.Is(err, ErrTooManyReferrers) || !strings.Contains(err.Error(), "lists 4 entries: only the first 2, the cap") {
				t.Fatalf("err = %v, want ErrTooManyReferrers naming the cap", err)
			}
		})
	}
}
