package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/source/margo/margotest"
)

// TestMargoTrustBundle runs the berth agent binary (agent --once, so a
// fresh process every step) against a test WFM and a test MIS serving
// the trust domain's SPIFFE bundle: the agent fetches the bundle over
// HTTPS (validated with its provisioned anchors, never trust on first
// use) and caches it; the WFM's SVID is re-issued under a new CA, which
// the device refuses until a bundle with a higher spiffe_sequence
// announces that CA, and then keeps working; a bundle with a lower
// spiffe_sequence, an empty bundle and a MIS outage each leave the
// accepted bundle in force (the WFM, whose SVID only the new CA vouches
// for, stays reachable); an accepted bundle replaces the anchors rather
// than merging them (the WFM is refused again once a bundle drops its CA).
// The WFM and the MIS are the doubles of margotest; no Docker is needed:
// the manifests assign no deployment, so "working" is the accepted
// manifestVersion moving on.
func TestMargoTrustBundle(t *testing.T) {
	e := newEnv(t)
	w := margotest.Start(t, margotest.Options{})
	mis := margotest.StartMIS(t, w.CA) // HTTPS certificate for 127.0.0.1 from the trust domain's CA
	d := &margoDevice{env: e, wfm: w}
	d.ids = w.ClientFiles(t, filepath.Join(t.TempDir(), "identity"), margoDeviceID)
	d.stateDir = filepath.Join(t.TempDir(), "state")
	d.cfgPath = filepath.Join(filepath.Dir(d.stateDir), "agent.yaml")
	cfg := fmt.Sprintf(`stateDir: %s
margo:
  wfm: %s
  deviceId: %s
  identity: {cert: %s, key: %s, trustBundle: %s}
  trustBundle: {uri: %s}
  interval: 1h
  timeout: 20s
  verify: {keys: [%s]}
  device: {vendor: Acme, modelNumber: E-100, serialNumber: SN-7}
apply:
  compose: {host: "unix:///nonexistent/docker.sock"}
`, d.stateDir, w.URL, margoDeviceID, d.ids.Cert, d.ids.Key, d.ids.Bundle, mis.BundleURI, e.pub)
	if err := os.WriteFile(d.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cacheFile := filepath.Join(d.stateDir, "margo", "trust-bundle.json")
	cached := func() (uint64, int) {
		t.Helper()
		raw, err := os.ReadFile(cacheFile)
		if err != nil {
			t.Fatalf("trust bundle cache: %v", err)
		}
		var c struct {
			Bundle struct {
				Sequence uint64            `json:"spiffe_sequence"`
				Keys     []json.RawMessage `json:"keys"`
			} `json:"bundle"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			t.Fatalf("trust bundle cache: %v", err)
		}
		return c.Bundle.Sequence, len(c.Bundle.Keys)
	}
	// step publishes an empty manifest of version mv, runs the agent once
	// and checks its outcome and log.
	step := func(what string, mv uint64, outcome, wantErr, wantLog string) string {
		t.Helper()
		w.Publish(mv)
		r, code, log := d.once()
		if r.Outcome != outcome || !strings.Contains(r.Error, wantErr) || (wantErr == "") != (r.Error == "") || (code == 0) != (r.Error == "") || !strings.Contains(log, wantLog) {
			t.Fatalf("%s: agent --once = %+v (exit %d), want %s with error %q and %q in the log\nlog:\n%s", what, r, code, outcome, wantErr, wantLog, log)
		}
		return log
	}
	hits := 0
	misHits := func(what string, want ...string) {
		t.Helper()
		got := mis.Hits()[hits:]
		hits = len(mis.Hits())
		if !slices.Equal(got, want) {
			t.Errorf("%s: MIS hits %q, want %q", what, got, want)
		}
	}

	// 1. The first run fetches the bundle, caches it, and talks to the WFM.
	mis.SetBundle(margotest.BundleJSON(5, 3600, w.CA))
	step("first fetch", 2, "unchanged", "", "")
	misHits("first fetch", "/bundle 200")
	if seq, keys := cached(); seq != 5 || keys != 2 { // the x509-svid anchor and the jwt-svid key, as served
		t.Errorf("cached bundle: sequence %d with %d keys, want 5 with 2", seq, keys)
	}
	if a := d.accepted(); a.ManifestVersion != 2 {
		t.Fatalf("accepted manifestVersion %d, want 2", a.ManifestVersion)
	}

	// 2. The WFM's SVID is re-issued under a new CA that no bundle
	// announces yet: refused, and the MIS, asked with the cached ETag, has
	// nothing new (304).
	rotated := margotest.NewCA(t, w.CA.TrustDomain)
	w.Reissue(rotated)
	step("WFM re-issued under an unknown CA", 3, "error", "does not verify against the trust bundle", "")
	misHits("WFM re-issued", "/bundle 304")
	if a := d.accepted(); a.ManifestVersion != 2 {
		t.Fatalf("accepted manifestVersion %d after a refused WFM, want 2", a.ManifestVersion)
	}

	// 3. The rotation: a bundle with a higher spiffe_sequence announces the
	// new CA (beside the one of the device's own SVID); the agent takes it
	// and talks to the re-issued WFM.
	rotatedBundle := margotest.BundleJSON(6, 3600, w.CA, rotated)
	mis.SetBundle(rotatedBundle)
	step("rotated bundle", 3, "unchanged", "", "")
	misHits("rotated bundle", "/bundle 200")
	if seq, keys := cached(); seq != 6 || keys != 3 {
		t.Errorf("cached bundle after the rotation: sequence %d with %d keys, want 6 with 3", seq, keys)
	}
	if a := d.accepted(); a.ManifestVersion != 3 {
		t.Fatalf("accepted manifestVersion %d after the rotation, want 3", a.ManifestVersion)
	}
	inForce, err := os.ReadFile(cacheFile)
	if err != nil {
		t.Fatal(err)
	}

	// 4. Refusals keep the accepted bundle: had the agent taken any of
	// these, it would no longer trust the WFM's new certificate.
	for i, tt := range []struct {
		what    string
		serve   func()
		log     string
		wantHit string
	}{
		{"sequence regression", func() { mis.SetBundle(margotest.BundleJSON(4, 3600, w.CA)) }, "spiffe_sequence 4 is lower than the accepted 6", "/bundle 200"},
		{"empty bundle", func() { mis.SetBundle([]byte(`{"spiffe_sequence": 7, "spiffe_refresh_hint": 3600, "keys": []}`)) }, "without x509-svid anchors", "/bundle 200"},
		{"bundle of jwt-svid keys only", func() {
			mis.SetBundle([]byte(`{"spiffe_sequence": 7, "keys": [{"kty": "EC", "crv": "P-256", "use": "jwt-svid", "kid": "k", "x": "AA", "y": "AA"}]}`))
		}, "without x509-svid anchors", "/bundle 200"},
		{"MIS outage", func() { mis.Fail(503) }, "the MIS answered 503", "/bundle 503"},
	} {
		tt.serve()
		log := step(tt.what, uint64(4+i), "unchanged", "", tt.log)
		if !strings.Contains(log, "the bundle in force stays") {
			t.Errorf("%s: the log does not say the bundle in force stays:\n%s", tt.what, log)
		}
		misHits(tt.what, tt.wantHit)
		if now, _ := os.ReadFile(cacheFile); !bytes.Equal(now, inForce) {
			t.Errorf("%s: the cached bundle changed", tt.what)
		}
		if a := d.accepted(); a.ManifestVersion != uint64(4+i) {
			t.Errorf("%s: accepted manifestVersion %d, want %d (the WFM must stay reachable)", tt.what, a.ManifestVersion, 4+i)
		}
	}

	// 5. An accepted bundle replaces the anchors, never merges them: a
	// newer bundle without the new CA makes the WFM untrusted again.
	mis.SetBundle(margotest.BundleJSON(8, 3600, w.CA))
	step("bundle dropping the WFM's CA", 9, "error", "does not verify against the trust bundle", "")
	if seq, keys := cached(); seq != 8 || keys != 2 {
		t.Errorf("cached bundle: sequence %d with %d keys, want 8 with 2", seq, keys)
	}
	if a := d.accepted(); a.ManifestVersion != 7 {
		t.Errorf("accepted manifestVersion %d, want 7", a.ManifestVersion)
	}
	if v := w.Violations(); len(v) > 0 {
		t.Errorf("the WFM found schema violations in the agent's requests: %v", v)
	}
}
