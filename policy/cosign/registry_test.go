package cosign

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestRegistryErrors: registry failures are ErrRegistry, never "unsigned",
// and keep the transport error reachable.
func TestRegistryErrors(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closedHost := strings.TrimPrefix(closed.URL, "http://")
	closed.Close()

	unauthorized := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="berth-test"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(unauthorized.Close)
	unauthHost := strings.TrimPrefix(unauthorized.URL, "http://")

	const digest = "sha256:0000000000000000000000000000000000000000000000000000000000000001"
	k := newTestKey(t, "k.pub")
	for _, tc := range []struct {
		name       string
		host       string
		wantStatus int
	}{
		{"unreachable", closedHost, 0},
		{"401", unauthHost, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := name.NewDigest(tc.host + "/berth/app@" + digest)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Verify(context.Background(), d, []Key{k.key})
			checkRegistryErr(t, "Verify", err, tc.wantStatus)
			for _, f := range formats {
				err := Sign(context.Background(), d, k.sv, f)
				checkRegistryErr(t, "Sign "+f.String(), err, tc.wantStatus)
			}
		})
	}
}

func checkRegistryErr(t *testing.T, what string, err error, status int) {
	t.Helper()
	if !errors.Is(err, ErrRegistry) {
		t.Fatalf("%s: %v, want ErrRegistry", what, err)
	}
	for _, s := range []error{ErrNoSignature, ErrKeyMismatch, ErrDigestMismatch} {
		if errors.Is(err, s) {
			t.Errorf("%s: registry failure also matches %v", what, s)
		}
	}
	if status != 0 {
		var terr *transport.Error
		if !errors.As(err, &terr) || terr.StatusCode != status {
			t.Errorf("%s: %v, want a transport error with status %d", what, err, status)
		}
	}
	t.Logf("%s: %v", what, err)
}

// failing wraps a registry handler and answers 403 to requests whose path
// matches (not a 5xx, which go-containerregistry retries with backoff).
func failing(h http.Handler, match func(path string) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if match(r.URL.Path) {
			http.Error(w, `{"errors":[{"code":"DENIED","message":"denied"}]}`, http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// TestPartialRegistryFailure: when one place cannot be read, a signature in
// the other still verifies; without one the result is ErrRegistry, not
// ErrNoSignature.
func TestPartialRegistryFailure(t *testing.T) {
	var broken atomic.Pointer[func(string) bool]
	srv := httptest.NewServer(failing(registry.New(
		registry.WithReferrersSupport(true),
		registry.Logger(log.New(io.Discard, "", 0)),
	), func(p string) bool { f := broken.Load(); return f != nil && (*f)(p) }))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	k := newTestKey(t, "k.pub")

	sigTag := func(p string) bool { return strings.HasSuffix(p, ".sig") }
	referrers := func(p string) bool { return strings.Contains(p, "/referrers/") }
	for _, tc := range []struct {
		name    string
		sign    []Format
		broken  func(string) bool
		wantErr error
	}{
		{".sig unreadable, bundle verifies", []Format{FormatBundle}, sigTag, nil},
		{"referrers unreadable, .sig verifies", []Format{FormatLegacy}, referrers, nil},
		{".sig unreadable, unsigned", nil, sigTag, ErrRegistry},
		{"referrers unreadable, unsigned", nil, referrers, ErrRegistry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := pushImage(t, host)
			for _, f := range tc.sign {
				mustSign(t, d, k, f)
			}
			broken.Store(&tc.broken)
			defer broken.Store(nil)
			_, err := Verify(context.Background(), d, []Key{k.key})
			wantErr(t, err, tc.wantErr)
			if errors.Is(err, ErrNoSignature) {
				t.Errorf("registry failure reported as unsigned: %v", err)
			}
		})
	}
}

// TestInsecureRegistryName: a plain-HTTP registry under a hostname that
// go-containerregistry would otherwise reach over HTTPS works when the
// digest was parsed with name.Insecure (cosign's own referrer writer loses
// that option, which is why Sign writes the referrer itself).
func TestInsecureRegistryName(t *testing.T) {
	for _, mode := range registryModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			addr := startRegistry(t, mode.referrers)
			tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			}}
			t.Cleanup(tr.CloseIdleConnections)
			ropts := []remote.Option{remote.WithTransport(tr)}

			repo, err := name.NewRepository("registry.berth.test:5000/berth/app", name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			img, err := random.Image(128, 1)
			if err != nil {
				t.Fatal(err)
			}
			d := pushTo(t, repo, img, ropts...)
			for _, f := range formats {
				k := newTestKey(t, f.String()+".pub")
				mustSign(t, d, k, f, ropts...)
				res, err := Verify(context.Background(), d, []Key{k.key}, ropts...)
				if err != nil {
					t.Fatalf("%v: %v", f, err)
				}
				if res.Format != f {
					t.Errorf("format %v, want %v", res.Format, f)
				}
			}
		})
	}
}

// TestDistributionRegistry runs sign and verify against a real registry
// (Debian's docker-registry, distribution 2.8: no referrers API) over TLS
// with a private CA and basic auth, all passed as remote.Options.
func TestDistributionRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("starts docker-registry")
	}
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	ropts := []remote.Option{
		remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}),
		remote.WithTransport(reg.HTTPClient().Transport),
	}
	repo, err := name.NewRepository(reg.Ref("berth/app"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := pushTo(t, repo, img, ropts...)
	old, cur := newTestKey(t, "old.pub"), newTestKey(t, "new.pub")

	_, err = Verify(context.Background(), d, []Key{cur.key}, ropts...)
	wantErr(t, err, ErrNoSignature)

	for _, f := range formats {
		mustSign(t, d, old, f, ropts...)
	}
	_, err = Verify(context.Background(), d, []Key{cur.key}, ropts...)
	wantErr(t, err, ErrKeyMismatch)
	if !strings.Contains(err.Error(), "(1 bundle, 1 .sig)") {
		t.Errorf("message: %v", err)
	}

	mustSign(t, d, cur, FormatBundle, ropts...)
	res, err := Verify(context.Background(), d, []Key{cur.key}, ropts...)
	if err != nil {
		t.Fatal(err)
	}
	if res.Format != FormatBundle || res.Key != "new.pub" {
		t.Errorf("result %+v", res)
	}
	fallback := repo.Tag(strings.Replace(d.DigestStr(), ":", "-", 1))
	if _, err := remote.Get(fallback, ropts...); err != nil {
		t.Errorf("referrers fallback tag %s: %v", fallback, err)
	}

	// Without credentials: a registry error carrying the 401, not "unsigned".
	_, err = Verify(context.Background(), d, []Key{cur.key}, remote.WithTransport(reg.HTTPClient().Transport))
	checkRegistryErr(t, "Verify without credentials", err, http.StatusUnauthorized)
}
