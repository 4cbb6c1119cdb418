package margo

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/errdef"
	"github.com/berth-dev/berth/source/margo/margotest"
)

// mutateBundle decodes a bundle, lets f change it and encodes it again.
func mutateBundle(t *testing.T, b []byte, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestParseTrustBundle(t *testing.T) {
	ca1, ca2 := margotest.NewCA(t, "plant.example"), margotest.NewCA(t, "plant.example")
	good := margotest.BundleJSON(7, 300, ca1, ca2)
	key0 := func(m map[string]any) map[string]any { return m["keys"].([]any)[0].(map[string]any) }
	for _, tt := range []struct {
		name    string
		data    []byte
		anchors int
		is      error
		want    string
	}{
		{name: "two anchors, jwt-svid ignored", data: good, anchors: 2},
		{name: "empty keys", data: []byte(`{"spiffe_sequence":1,"keys":[]}`), is: ErrEmptyTrustBundle},
		{name: "only jwt-svid keys", data: []byte(`{"keys":[{"kty":"EC","crv":"P-256","use":"jwt-svid","x":"AA","y":"AA"}]}`), is: ErrEmptyTrustBundle},
		{name: "no keys member", data: []byte(`{"spiffe_sequence":1}`), is: ErrInvalidTrustBundle, want: "no keys"},
		{name: "unknown member", data: mutateBundle(t, good, func(m map[string]any) { m["extra"] = 1 }), is: ErrInvalidTrustBundle, want: "unknown field"},
		{name: "trailing data", data: append(slices.Clone(good), []byte(` {}`)...), is: ErrInvalidTrustBundle, want: "after the JSON"},
		{name: "x5c not base64", data: mutateBundle(t, good, func(m map[string]any) { key0(m)["x5c"] = []string{"!!"} }), is: ErrInvalidTrustBundle, want: "not base64"},
		{name: "x5c not DER", data: mutateBundle(t, good, func(m map[string]any) { key0(m)["x5c"] = []string{base64.StdEncoding.EncodeToString([]byte("nope"))} }), is: ErrInvalidTrustBundle, want: "x5c"},
		{name: "two x5c certificates", data: mutateBundle(t, good, func(m map[string]any) {
			key0(m)["x5c"] = []string{base64.StdEncoding.EncodeToString(ca1.Cert.Raw), base64.StdEncoding.EncodeToString(ca2.Cert.Raw)}
		}), is: ErrInvalidTrustBundle, want: "exactly one x5c"},
		{name: "x5c of another key", data: mutateBundle(t, good, func(m map[string]any) { key0(m)["x5c"] = []string{base64.StdEncoding.EncodeToString(ca2.Cert.Raw)} }), is: ErrInvalidTrustBundle, want: "not the public key"},
		{name: "negative refresh hint", data: mutateBundle(t, good, func(m map[string]any) { m["spiffe_refresh_hint"] = -1 }), is: ErrInvalidTrustBundle, want: "spiffe_refresh_hint"},
		{name: "too large", data: append([]byte(`{"keys":[]`), bytes.Repeat([]byte(" "), MaxTrustBundleSize)...), is: ErrTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb, err := ParseTrustBundle(tt.data)
			if tt.is == nil {
				if err != nil {
					t.Fatal(err)
				}
				if len(tb.Anchors) != tt.anchors || tb.Sequence != 7 || tb.RefreshHint != 300*time.Second {
					t.Fatalf("got %d anchors, sequence %d, hint %s", len(tb.Anchors), tb.Sequence, tb.RefreshHint)
				}
				return
			}
			if !errors.Is(err, tt.is) || !errors.Is(err, errdef.ErrRefused) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %v with %q", err, tt.is, tt.want)
			}
		})
	}
}

func FuzzParseTrustBundle(f *testing.F) {
	ca := margotest.NewCA(f, "plant.example")
	f.Add(margotest.BundleJSON(1, 60, ca))
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"use":"x509-svid","x5c":["AA=="]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tb, err := ParseTrustBundle(data)
		if err == nil && len(tb.Anchors) == 0 {
			t.Fatal("a bundle without anchors was accepted")
		}
		if err != nil && !errors.Is(err, errdef.ErrRefused) {
			t.Fatalf("error not of class ErrRefused: %v", err)
		}
	})
}

// tbClock is a settable clock for the client.
type tbClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *tbClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *tbClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type tbFixture struct {
	wfm   *margotest.WFM
	mis   *margotest.MIS
	c     *Client
	clk   *tbClock
	cache string
	files margotest.Files
}

// newTBFixture starts a WFM and a MIS serving the WFM CA's bundle
// (sequence 1), and a client fetching it.
func newTBFixture(t *testing.T, mutate func(*Options, *margotest.MIS)) *tbFixture {
	t.Helper()
	w := margotest.Start(t, margotest.Options{})
	mis := margotest.StartMIS(t, w.CA)
	mis.SetBundle(margotest.BundleJSON(1, 3600, w.CA))
	dir := t.TempDir()
	files := w.ClientFiles(t, filepath.Join(dir, "id"), "press-42")
	clk := &tbClock{t: time.Now()}
	o := Options{
		URL: w.URL, DeviceID: "press-42", CacheDir: filepath.Join(dir, "cache"),
		Identity: Identity{CertFile: files.Cert, KeyFile: files.Key, TrustBundleFile: files.Bundle},
		WFMID:    w.ID, Timeout: 10 * time.Second, Now: clk.now,
		TrustBundle: TrustBundleOptions{URI: mis.BundleURI, CacheFile: filepath.Join(dir, "trust-bundle.json")},
		Log:         slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mutate != nil {
		mutate(&o, mis)
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &tbFixture{wfm: w, mis: mis, c: c, clk: clk, cache: o.TrustBundle.CacheFile, files: files}
}

func TestTrustBundleRules(t *testing.T) {
	for _, tt := range []struct {
		name string
		// second is served after a first fetch of {WFM CA, old} at
		// sequence 5.
		second  func(f *tbFixture) []byte
		fail    int
		is      error
		want    string
		anchors int
	}{
		{name: "empty bundle refused", second: func(*tbFixture) []byte { return []byte(`{"spiffe_sequence":6,"keys":[]}`) }, is: ErrEmptyTrustBundle, anchors: 2},
		{name: "sequence regression refused", second: func(f *tbFixture) []byte {
			return margotest.BundleJSON(4, 60, f.wfm.CA, margotest.NewCA(t, "plant.example"))
		}, is: ErrTrustBundleRegression, anchors: 2},
		{name: "bad x5c refused", second: func(*tbFixture) []byte {
			return []byte(`{"spiffe_sequence":6,"keys":[{"kty":"EC","use":"x509-svid","x5c":["AAAA"]}]}`)
		}, is: ErrInvalidTrustBundle, anchors: 2},
		{name: "bundle without the device's anchor refused", second: func(*tbFixture) []byte { return margotest.BundleJSON(6, 60, margotest.NewCA(t, "plant.example")) }, is: ErrInvalidTrustBundle, want: "does not chain", anchors: 2},
		{name: "MIS failure keeps the bundle", second: func(f *tbFixture) []byte { return nil }, fail: http.StatusServiceUnavailable, want: "503", anchors: 2},
		// {WFM CA, old} then {WFM CA, new}: a merge would leave 3 anchors.
		{name: "replaced, not merged", second: func(f *tbFixture) []byte {
			return margotest.BundleJSON(6, 60, f.wfm.CA, margotest.NewCA(t, "plant.example"))
		}, anchors: 2},
		{name: "replaced by fewer anchors", second: func(f *tbFixture) []byte { return margotest.BundleJSON(6, 60, f.wfm.CA) }, anchors: 1},
		{name: "equal sequence accepted", second: func(f *tbFixture) []byte {
			return margotest.BundleJSON(5, 60, f.wfm.CA, margotest.NewCA(t, "plant.example"), margotest.NewCA(t, "plant.example"))
		}, anchors: 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newTBFixture(t, nil)
			f.mis.SetBundle(margotest.BundleJSON(5, 60, f.wfm.CA, margotest.NewCA(t, "plant.example")))
			if err := f.c.RefreshTrustBundle(ctx(t)); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(f.cache)
			if b := tt.second(f); b != nil {
				f.mis.SetBundle(b)
			}
			if tt.fail != 0 {
				f.mis.Fail(tt.fail)
			}
			err := f.c.RefreshTrustBundle(ctx(t))
			if tt.is != nil || tt.want != "" {
				if err == nil || (tt.is != nil && !errors.Is(err, tt.is)) || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err = %v, want %v with %q", err, tt.is, tt.want)
				}
				if after, _ := os.ReadFile(f.cache); !bytes.Equal(before, after) {
					t.Fatal("a refused bundle changed the cache")
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got := f.c.Identity().Anchors; got != tt.anchors {
				t.Fatalf("anchors in force = %d, want %d", got, tt.anchors)
			}
			if _, err := f.c.Poll(ctx(t), &State{}); err != nil {
				t.Fatalf("poll after the refresh: %v", err)
			}
		})
	}
}

func TestTrustBundleNotModifiedAndRefreshHint(t *testing.T) {
	f := newTBFixture(t, nil)
	f.mis.SetBundle(margotest.BundleJSON(2, 120, f.wfm.CA))
	if _, err := f.c.Poll(ctx(t), &State{}); err != nil { // first fetch is due at start
		t.Fatal(err)
	}
	f.clk.add(60 * time.Second) // before the hint: no fetch
	if _, err := f.c.Poll(ctx(t), &State{}); err != nil {
		t.Fatal(err)
	}
	f.clk.add(61 * time.Second) // past the hint: a conditional fetch, 304
	if _, err := f.c.Poll(ctx(t), &State{}); err != nil {
		t.Fatal(err)
	}
	if got, want := f.mis.Hits(), []string{"/bundle 200", "/bundle 304"}; !slices.Equal(got, want) {
		t.Fatalf("MIS hits = %q, want %q", got, want)
	}
	if f.c.Identity().Anchors != 1 {
		t.Fatal("the bundle in force changed on 304")
	}
}

func TestTrustBundleDiscoveryAndCacheAtStart(t *testing.T) {
	f := newTBFixture(t, func(o *Options, m *margotest.MIS) {
		o.TrustBundle.URI, o.TrustBundle.Discovery = "", m.URL
	})
	extra := margotest.NewCA(t, "plant.example")
	f.mis.SetBundle(margotest.BundleJSON(3, 60, f.wfm.CA, extra))
	if err := f.c.RefreshTrustBundle(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if got := f.mis.Hits(); !slices.Equal(got, []string{"/.well-known/margo 200", "/bundle 200"}) {
		t.Fatalf("MIS hits = %q", got)
	}
	// A restart with the MIS gone validates with the cached anchors.
	f.mis.Fail(http.StatusServiceUnavailable)
	c2, err := New(Options{
		URL: f.wfm.URL, DeviceID: "press-42", CacheDir: t.TempDir(), WFMID: f.wfm.ID, Timeout: 10 * time.Second,
		Identity:    Identity{CertFile: f.files.Cert, KeyFile: f.files.Key, TrustBundleFile: f.files.Bundle},
		TrustBundle: TrustBundleOptions{Discovery: f.mis.URL, CacheFile: f.cache},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got := c2.Identity().Anchors; got != 2 {
		t.Fatalf("anchors at start = %d, want the cached 2", got)
	}
	if _, err := c2.Poll(ctx(t), &State{}); err != nil {
		t.Fatalf("offline start: %v", err)
	}
}

func TestTrustBundleNonHTTPSRefused(t *testing.T) {
	for _, o := range []TrustBundleOptions{{URI: "http://mis.plant.local/bundle"}, {Discovery: "http://mis.plant.local"}, {URI: "ftp://x/b"}} {
		o.CacheFile = filepath.Join(t.TempDir(), "c.json")
		_, err := New(Options{URL: "https://wfm.local", DeviceID: "d", CacheDir: t.TempDir(), TrustBundle: o})
		if err == nil || !strings.Contains(err.Error(), "https") {
			t.Fatalf("%+v: err = %v, want an https error", o, err)
		}
	}
	// A discovery document naming a plain HTTP bundle is refused too.
	if err := CheckTrustBundleURI("http://x/b"); err == nil {
		t.Fatal("http accepted")
	}
}

// TestTrustBundleRotation: the WFM's SVID is re-issued under a rotated
// anchor; the device keeps working once the bundle carrying it is
// fetched, and fails closed when a bundle lacks the WFM's anchor.
func TestTrustBundleRotation(t *testing.T) {
	f := newTBFixture(t, func(o *Options, _ *margotest.MIS) { o.TrustBundle.Refresh = time.Minute })
	st := &State{}
	if _, err := f.c.Poll(ctx(t), st); err != nil {
		t.Fatal(err)
	}
	rotated := margotest.NewCA(t, "plant.example")
	f.wfm.Reissue(rotated)
	f.c.Close() // a new connection sees the re-issued certificate
	if _, err := f.c.Poll(ctx(t), st); err == nil || !errors.Is(err, ErrIdentity) {
		t.Fatalf("before the refresh: err = %v, want ErrIdentity", err)
	}
	f.mis.SetBundle(margotest.BundleJSON(2, 60, f.wfm.CA, rotated))
	f.clk.add(2 * time.Minute)
	if _, err := f.c.Poll(ctx(t), st); err != nil {
		t.Fatalf("after the bundle refresh: %v", err)
	}
	f.mis.SetBundle(margotest.BundleJSON(3, 60, f.wfm.CA)) // lacks the WFM's anchor
	f.clk.add(2 * time.Minute)
	_, err := f.c.Poll(ctx(t), st)
	if err == nil || !errors.Is(err, ErrIdentity) || !strings.Contains(err.Error(), "does not verify against the trust bundle") {
		t.Fatalf("with a bundle lacking the WFM's anchor: err = %v, want ErrIdentity", err)
	}
}
