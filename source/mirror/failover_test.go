package mirror

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/errdef"
)

func TestTry(t *testing.T) {
	src := Endpoint{Ref: "ghcr.io/acme/web@sha256:00"}
	m1 := Endpoint{Ref: "m1.local/acme/web@sha256:00", Mirror: "m1.local/acme", Set: "ghcr.io/acme"}
	m2 := Endpoint{Ref: "m2.local/acme/web@sha256:00", Mirror: "m2.local/acme", Set: "ghcr.io/acme"}
	srcSet := src
	srcSet.Set = "ghcr.io/acme"
	errNotFound := errors.New("not found")
	errReset := errors.New("connection reset by peer")
	errBad := errdef.Refusal("digest mismatch")
	errStop := errors.New("stop here")

	for _, tc := range []struct {
		name string
		eps  []Endpoint
		errs map[string]error // by endpoint name; absent serves
		// want
		served    int
		calls     []string
		err       error    // errors.Is target; nil: success
		tried     bool     // a *TriedError
		contains  []string // in the error message
		noContain []string
	}{
		{name: "source alone serves", eps: []Endpoint{src}, served: 0, calls: []string{"source"}},
		{name: "source alone fails: its error as is", eps: []Endpoint{src}, errs: map[string]error{"source": errReset},
			served: 0, calls: []string{"source"}, err: errReset, noContain: []string{"no registry served it"}},
		{name: "first mirror serves", eps: []Endpoint{m1, m2, srcSet}, served: 0, calls: []string{"mirror m1.local/acme"}},
		{name: "transport failures pass to the next", eps: []Endpoint{m1, m2, srcSet},
			errs:   map[string]error{"mirror m1.local/acme": errNotFound, "mirror m2.local/acme": errReset},
			served: 2, calls: []string{"mirror m1.local/acme", "mirror m2.local/acme", "source"}},
		{name: "refused content ends the search", eps: []Endpoint{m1, m2, srcSet},
			errs:   map[string]error{"mirror m1.local/acme": errBad},
			served: 0, calls: []string{"mirror m1.local/acme"}, err: errdef.ErrRefused},
		{name: "final ends the search", eps: []Endpoint{m1, m2, srcSet},
			errs:   map[string]error{"mirror m1.local/acme": errStop},
			served: 0, calls: []string{"mirror m1.local/acme"}, err: errStop},
		{name: "none serves: every error in order", eps: []Endpoint{m1, srcSet},
			errs:   map[string]error{"mirror m1.local/acme": errNotFound, "source": errReset},
			served: -1, calls: []string{"mirror m1.local/acme", "source"}, err: errReset, tried: true,
			contains:  []string{"pull x: no registry served it; tried in order: [mirror m1.local/acme] not found; [source ghcr.io] connection reset by peer"},
			noContain: []string{"sourceFallback"}},
		{name: "source excluded: said so", eps: []Endpoint{m1, m2},
			errs:   map[string]error{"mirror m1.local/acme": errNotFound, "mirror m2.local/acme": errNotFound},
			served: -1, calls: []string{"mirror m1.local/acme", "mirror m2.local/acme"}, err: errNotFound, tried: true,
			contains: []string{"the source registry was not tried: sourceFallback is off for ghcr.io/acme"}},
		{name: "one mirror alone is a list", eps: []Endpoint{m1},
			errs:   map[string]error{"mirror m1.local/acme": errReset},
			served: -1, calls: []string{"mirror m1.local/acme"}, err: errReset, tried: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls []string
			v, i, err := Try(context.Background(), tc.eps, Options{What: "pull x", Final: func(err error) bool { return errors.Is(err, errStop) }},
				func(_ context.Context, ep Endpoint) (string, error) {
					calls = append(calls, ep.Name())
					if err := tc.errs[ep.Name()]; err != nil {
						return "", err
					}
					return ep.Ref, nil
				})
			if i != tc.served {
				t.Errorf("served by %d, want %d", i, tc.served)
			}
			if strings.Join(calls, ",") != strings.Join(tc.calls, ",") {
				t.Errorf("calls = %v, want %v", calls, tc.calls)
			}
			if tc.err == nil {
				if err != nil || v != tc.eps[tc.served].Ref {
					t.Fatalf("Try = %q, %v; want %q", v, err, tc.eps[tc.served].Ref)
				}
				return
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v does not match %v", err, tc.err)
			}
			var te *TriedError
			if errors.As(err, &te) != tc.tried {
				t.Errorf("TriedError = %v, want %v (%v)", te != nil, tc.tried, err)
			}
			for _, s := range tc.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			for _, s := range tc.noContain {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q contains %q", err, s)
				}
			}
		})
	}
}

func TestTryAttemptTimeout(t *testing.T) {
	eps := []Endpoint{{Ref: "a", Mirror: "slow.local"}, {Ref: "b"}}
	_, i, err := Try(context.Background(), eps, Options{What: "x", Timeout: 50 * time.Millisecond},
		func(ctx context.Context, ep Endpoint) (string, error) {
			if ep.Mirror != "" {
				<-ctx.Done() // a mirror that never answers
				return "", ctx.Err()
			}
			return ep.Ref, nil
		})
	if err != nil || i != 1 {
		t.Fatalf("Try = %d, %v; want the source to serve after the mirror's attempt timed out", i, err)
	}
}

func TestTryContextEnded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	eps := []Endpoint{{Ref: "a", Mirror: "m"}, {Ref: "b"}}
	calls := 0
	_, _, err := Try(ctx, eps, Options{What: "x"}, func(context.Context, Endpoint) (int, error) {
		calls++
		cancel()
		return 0, context.Canceled
	})
	if calls != 1 || !errors.Is(err, context.Canceled) {
		t.Fatalf("calls = %d, err = %v; want one call and the context's error", calls, err)
	}
}

func TestTriedErrorAll(t *testing.T) {
	nf := errors.New("not found")
	te := &TriedError{Errs: []error{&EndpointError{Err: nf}, &EndpointError{Err: nf}}}
	if !te.All(nf) {
		t.Error("All(not found) = false for two not-found endpoints")
	}
	te.Errs = append(te.Errs, &EndpointError{Err: errors.New("reset")})
	if te.All(nf) {
		t.Error("All(not found) = true with a reset among them")
	}
	if (&TriedError{}).All(nf) {
		t.Error("All of nothing = true")
	}
}

func TestStartAt(t *testing.T) {
	eps := []Endpoint{{Ref: "a"}, {Ref: "b"}, {Ref: "c"}}
	for i, want := range []string{"abc", "bac", "cab", "abc"} {
		var got string
		for _, e := range StartAt(eps, i) {
			got += e.Ref
		}
		if got != want {
			t.Errorf("StartAt(%d) = %s, want %s", i, got, want)
		}
	}
}
