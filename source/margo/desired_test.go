package margo

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/berth-dev/berth/source/margo/margotest"
)

// TestDigestsOverDecodedBytes: a WFM that compresses its answers
// (Content-Encoding: gzip) is understood, and every digest is checked over
// the decoded bytes, for the bundle and for a single YAML.
func TestDigestsOverDecodedBytes(t *testing.T) {
	f := newFixture(t, margotest.Options{Gzip: true}, nil)
	f.wfm.Publish(2, depYAML(1, "1.0.0"), depYAML(2, "1.0.0"), depYAML(3, "1.0.0"))
	st := &State{Version: StateVersion}
	d, err := f.c.Poll(ctx(t), st)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Fetch.Bundle || len(d.Deployments) != 3 || !bytes.Equal(d.Deployments[2].Raw, depYAML(3, "1.0.0")) {
		t.Fatalf("first poll: fetch %+v, %d deployments", d.Fetch, len(d.Deployments))
	}
	st.Accept(d)
	f.wfm.Publish(3, depYAML(1, "1.0.0"), depYAML(2, "2.0.0"), depYAML(3, "1.0.0"))
	if d, err = f.c.Poll(ctx(t), st); err != nil {
		t.Fatal(err)
	}
	if d.Fetch.Bundle || d.Fetch.Individual != 1 || !bytes.Equal(d.Deployments[1].Raw, depYAML(2, "2.0.0")) {
		t.Fatalf("update: fetch %+v", d.Fetch)
	}
	var gz int
	for _, r := range f.wfm.Requests() {
		if r.Method == "GET" && r.Status == 200 {
			if r.Encoding != "gzip" {
				t.Errorf("GET %s answered without gzip", r.Path)
			}
			gz++
		}
	}
	if gz != 4 { // manifest, bundle, manifest, one YAML
		t.Errorf("%d compressed answers, want 4", gz)
	}
}

// captured is a slog handler keeping the records.
type captured struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (c *captured) Enabled(context.Context, slog.Level) bool { return true }
func (c *captured) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	c.recs = append(c.recs, r.Clone())
	c.mu.Unlock()
	return nil
}
func (c *captured) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *captured) WithGroup(string) slog.Handler      { return c }

// TestStaleManifestSecurityEvent: a manifest whose manifestVersion is not
// greater than the accepted one is refused and logged as a security event
// (an error record with securityEvent and both versions).
func TestStaleManifestSecurityEvent(t *testing.T) {
	h := &captured{}
	f := newFixture(t, margotest.Options{}, func(o *Options) { o.Log = slog.New(h) })
	st := accepted(t, f, 7)
	f.wfm.Publish(6, depYAML(1, "0.1.0"))
	if _, err := f.c.Poll(ctx(t), st); !errors.Is(err, ErrStaleManifest) {
		t.Fatalf("err = %v, want ErrStaleManifest", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.recs {
		attrs := map[string]string{}
		r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
		if r.Level == slog.LevelError && attrs["securityEvent"] == "margo-manifest-rollback" && attrs["manifestVersion"] == "6" && strings.Contains(r.Message, "security event") {
			return
		}
	}
	t.Errorf("no security event logged among %d records", len(h.recs))
}

// TestTrustBundleNoTOFU: the MIS's HTTPS certificate must chain to the
// anchors the device was provisioned with (or to caFile): a MIS with a
// certificate of an unknown CA is refused and nothing is cached; with
// that CA as caFile (an operator's pin), the bundle is fetched.
func TestTrustBundleNoTOFU(t *testing.T) {
	f := newTBFixture(t, nil)
	other := margotest.NewCA(t, "plant.example")
	mis := margotest.StartMIS(t, other) // its HTTPS certificate is not of the trust domain's CA
	mis.SetBundle(margotest.BundleJSON(1, 3600, f.wfm.CA))
	td := spiffeid.RequireTrustDomainFromString("plant.example")
	client := func(caFile string) *Client {
		o := f.c.opts
		o.TrustBundle.URI, o.TrustBundle.CAFile = mis.BundleURI, caFile
		c, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	err := client("").RefreshTrustBundle(ctx(t))
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("MIS with an unknown CA: err = %v", err)
	}
	if _, tb, _ := readBundleCache(f.cache, td); tb != nil {
		t.Fatal("a bundle from an untrusted MIS was cached")
	}
	if len(mis.Hits()) != 0 {
		t.Errorf("a request reached the untrusted MIS: %v", mis.Hits())
	}
	// The operator pins the MIS's CA (caFile): fetched.
	pin := filepath.Join(t.TempDir(), "mis-ca.pem")
	writeFile(t, pin, other.BundlePEM())
	if err := client(pin).RefreshTrustBundle(ctx(t)); err != nil {
		t.Fatalf("with the MIS's CA as caFile: %v", err)
	}
	if _, tb, _ := readBundleCache(f.cache, td); tb == nil || tb.Sequence != 1 {
		t.Fatalf("cached bundle = %+v", tb)
	}
}
