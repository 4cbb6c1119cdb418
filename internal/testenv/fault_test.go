package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestProxyFaults: each fault does to a blob download what it says, and
// the proxy forwards normally once the fault is lifted.
func TestProxyFaults(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	p := StartProxy(t, reg)
	img, err := random.Image(16<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(reg.Host() + "/testenv/faults:v1")
	opts := []remote.Option{remote.WithTransport(reg.HTTPClient().Transport), remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password})}
	if err := remote.Write(ref, img, opts...); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	size, _ := layers[0].Size()
	url := fmt.Sprintf("%s/v2/testenv/faults/blobs/%s", p.URL(), ld)

	// get downloads the blob through the proxy within timeout: the bytes
	// read and the error.
	get := func(timeout time.Duration) (int64, int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.SetBasicAuth(reg.Username, reg.Password)
		c := &http.Client{Transport: reg.HTTPClient().Transport.(*http.Transport).Clone()}
		resp, err := c.Do(req)
		if err != nil {
			return 0, 0, err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		return n, resp.StatusCode, err
	}
	if n, code, err := get(10 * time.Second); err != nil || code != 200 || n != size {
		t.Fatalf("without fault: %d bytes, %d, %v", n, code, err)
	}
	for _, tc := range []struct {
		fault Fault
		check func(n int64, code int, err error) string
	}{
		{FaultRefuse, func(_ int64, _ int, err error) string {
			if !errors.Is(err, syscall.ECONNREFUSED) {
				return "want connection refused"
			}
			return ""
		}},
		{Fault500, func(_ int64, code int, err error) string {
			if err != nil || code != http.StatusInternalServerError {
				return "want 500"
			}
			return ""
		}},
		{FaultSlow, func(n int64, _ int, err error) string {
			if !errors.Is(err, context.DeadlineExceeded) || n >= size || n > 4*SlowRate {
				return "want the deadline with at most 4 KB received"
			}
			return ""
		}},
		{FaultReset, func(n int64, _ int, err error) string {
			if err == nil || !strings.Contains(err.Error(), "connection reset") || n != size/2 {
				return "want a reset after half the body"
			}
			return ""
		}},
		{FaultTruncate, func(n int64, _ int, err error) string {
			if !errors.Is(err, io.ErrUnexpectedEOF) || n != size/2 {
				return "want an unexpected EOF after half the body"
			}
			return ""
		}},
	} {
		t.Run(tc.fault.String(), func(t *testing.T) {
			p.SetFault(tc.fault)
			n, code, err := get(2 * time.Second)
			if why := tc.check(n, code, err); why != "" {
				t.Errorf("%d of %d bytes, status %d, %v: %s", n, size, code, err, why)
			}
			p.SetFault(FaultNone)
			if n, code, err := get(10 * time.Second); err != nil || code != 200 || n != size {
				t.Fatalf("after lifting: %d bytes, %d, %v", n, code, err)
			}
		})
	}
	t.Run("flap", func(t *testing.T) {
		p.SetFault(FaultFlap)
		defer p.SetFault(FaultNone)
		ok, failed := 0, 0
		for end := time.Now().Add(4 * FlapPeriod); time.Now().Before(end); time.Sleep(FlapPeriod / 4) {
			if n, code, err := get(2 * time.Second); err == nil && code == 200 && n == size {
				ok++
			} else {
				failed++
			}
		}
		if ok == 0 || failed == 0 {
			t.Errorf("%d downloads succeeded and %d failed while flapping, want some of each", ok, failed)
		}
	})
}

// TestProxyIntercept: an interceptor answers the requests it wants.
func TestProxyIntercept(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	p := StartProxy(t, reg)
	p.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v2/hostile/tags/list" {
			return false
		}
		w.Header().Set("Link", `</v2/hostile/tags/list?last=x>; rel="next"`)
		fmt.Fprint(w, `{"tags":["x"]}`)
		return true
	})
	c := reg.HTTPClient()
	if got := getStatus(t, c, p.URL()+"/v2/", reg.Username, reg.Password); got != http.StatusOK {
		t.Errorf("GET /v2/ = %d: not forwarded", got)
	}
	resp, err := c.Get(p.URL() + "/v2/hostile/tags/list")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Link") == "" {
		t.Error("the interceptor did not answer")
	}
}
