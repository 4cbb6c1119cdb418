package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/source/margo"
	"github.com/berth-dev/berth/source/margo/margotest"
	"github.com/berth-dev/berth/source/margo/spec"
)

const margoYAML = `margo:
  wfm: https://wfm.plant.local
  deviceId: press-07
  identity: {cert: svid.pem, key: /etc/berth/svid-key.pem, trustBundle: bundle.pem}
  wfmID: spiffe://plant.example/margo/wfm/line-3
  trustBundle: {uri: "https://mis.plant.local/bundle", refresh: 1h, caFile: mis-ca.pem}
  allowTLS12: true
  interval: 2m
  timeout: 10s
  windows:
    polling: ["Mon-Fri 06:00-22:00"]
    downtime: ["Sun 02:00-04:00"]
  verify: {keys: [vendor.pub]}
  device:
    vendor: Acme
    labels: {example.com/line: "7"}
    interfaces: [ethernet, wifi]
    peripherals: [{type: gpu, manufacturer: NVIDIA}]
    otelCollector: true
    storagePath: /var/lib/docker
  statusQueue: 50
  limits: {maxSize: 1000}
  maxBandwidth: 256KiB
  credentials: {dockerConfig: docker/config.json}
  caFile: plant-ca.pem
apply:
  compose: {}
`

func TestParseMargo(t *testing.T) {
	c, err := Parse("/etc/berth/agent.yaml", []byte(margoYAML))
	if err != nil {
		t.Fatal(err)
	}
	m := c.Margo
	if m == nil || len(c.Sources) != 0 {
		t.Fatalf("config = %+v", c)
	}
	win, _ := margo.ParseWindow("Mon-Fri 06:00-22:00")
	down, _ := margo.ParseWindow("Sun 02:00-04:00")
	want := &Margo{
		WFM: "https://wfm.plant.local", DeviceID: "press-07",
		Identity: MargoIdentity{Cert: "/etc/berth/svid.pem", Key: "/etc/berth/svid-key.pem", TrustBundle: "/etc/berth/bundle.pem"},
		WFMID:    "spiffe://plant.example/margo/wfm/line-3", AllowTLS12: true,
		TrustBundle: &MargoTrustBundle{URI: "https://mis.plant.local/bundle", Refresh: time.Hour, CAFile: "/etc/berth/mis-ca.pem"}, Interval: 2 * time.Minute, Timeout: 10 * time.Second,
		Windows: margo.Windows{Polling: []margo.Window{win}, Downtime: []margo.Window{down}},
		Verify:  &Verify{Keys: []string{"/etc/berth/vendor.pub"}},
		Device: MargoDevice{Vendor: "Acme", Labels: map[string]string{"example.com/line": "7"}, Interfaces: []string{"ethernet", "wifi"},
			Peripherals: []spec.Peripheral{{Type: "gpu", Manufacturer: "NVIDIA"}}, OtelCollector: true, StoragePath: "/var/lib/docker"},
		StatusQueue: 50, Limits: Limits{MaxSize: 1000, MaxFiles: defaultLimits.MaxFiles}, MaxBandwidth: 256 << 10,
		Credentials: Credentials{DockerConfig: "/etc/berth/docker/config.json"}, CAFile: "/etc/berth/plant-ca.pem",
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("got  %+v\nwant %+v", m, want)
	}
	info := m.Info(c.Apply)
	if !reflect.DeepEqual(info.DeploymentTypes, []string{"compose"}) || info.ID != "press-07" {
		t.Errorf("Info = %+v", info)
	}
	if o := m.Client(); o.URL != m.WFM || o.Identity.TrustBundleFile != "/etc/berth/bundle.pem" || !o.AllowTLS12 ||
		o.TrustBundle != (margo.TrustBundleOptions{URI: "https://mis.plant.local/bundle", Refresh: time.Hour, CAFile: "/etc/berth/mis-ca.pem"}) {
		t.Errorf("Client = %+v", o)
	}
	// Defaults.
	c, err = Parse("agent.yaml", []byte("margo: {wfm: https://w, deviceId: d, identity: {cert: c, key: k, trustBundle: b}, insecureSkipVerify: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m := c.Margo; m.Interval != DefaultMargoInterval || m.Timeout != DefaultMargoTimeout || m.StatusQueue != DefaultMargoStatusQueue || m.Device.Interfaces != nil || !m.InsecureSkipVerify {
		t.Errorf("defaults = %+v", m)
	}
}

func TestParseMargoBad(t *testing.T) {
	tests := []struct{ from, to, want string }{
		{"https://wfm.plant.local", "http://wfm.plant.local", "margo.wfm: must be an https:// URL"},
		{"deviceId: press-07", "deviceId: gw/press-07", "margo.deviceId: must be letters"},
		{"  deviceId: press-07\n", "", `margo: missing required field "deviceId"`},
		{"key: /etc/berth/svid-key.pem, ", "", `margo.identity: missing required field "key"`},
		{"spiffe://plant.example/margo/wfm/line-3", "spiffe://plant.example/margo/wfm/line-3/client/x", "must be a WFM SPIFFE ID"},
		{"spiffe://plant.example/margo/wfm/line-3", "https://x", "is not a SPIFFE ID"},
		{"Mon-Fri 06:00-22:00", "Mon-Fry 06:00-22:00", "margo.windows.polling[0]: window"},
		{"  verify: {keys: [vendor.pub]}\n", "", "margo: has no verify"},
		{"[ethernet, wifi]", "[ethernet, lan]", `must be one of ethernet, wifi`},
		{"type: gpu", "type: tpu", "margo.device.peripherals[0].type: must be one of gpu"},
		{"statusQueue: 50", "statusQueue: 0", "margo.statusQueue: must be between 1"},
		{"maxBandwidth: 256KiB", "maxBandwidth: 512", `margo.maxBandwidth: must be at least 1024 bytes, got "512"`},
		{"maxBandwidth: 256KiB", "maxBandwidth: fast", "margo.maxBandwidth: must be an amount of bytes such as 1MiB"},
		{"maxBandwidth: 256KiB", "maxBandwidth: [1MiB]", "margo.maxBandwidth: must be an amount of bytes"},
		{"maxBandwidth: 256KiB", "maxbandwidth: 256KiB", `unknown field "maxbandwidth"`},
		{"interval: 2m", "interval: 2", "margo.interval: must be a duration"},
		{`uri: "https://mis.plant.local/bundle"`, `uri: "http://mis.plant.local/bundle"`, "margo.trustBundle.uri: \"http://mis.plant.local/bundle\" must be an https:// URL"},
		{`uri: "https://mis.plant.local/bundle"`, `uri: "https://mis.plant.local/bundle", discovery: "https://mis.plant.local"`, "margo.trustBundle: has both uri and discovery"},
		{`uri: "https://mis.plant.local/bundle", `, ``, `margo.trustBundle: missing required field "uri"`},
		{`refresh: 1h`, `refresh: soon`, "margo.trustBundle.refresh: must be a duration"},
		{`caFile: mis-ca.pem`, `cafile: mis-ca.pem`, `unknown field "cafile"`},
		{"allowTLS12: true", "allowTls12: true", `unknown field "allowTls12" (did you mean "allowTLS12"?)`},
		{"caFile: plant-ca.pem", "caFile: plant-ca.pem\n  insecure: true", "margo: has both caFile and insecure"},
		{"apply:\n", "sources:\n  - {name: margo, url: oci://r.local/x, ref: {tag: t}, insecureSkipVerify: true}\napply:\n", `sources[0].name: "margo" is the name of the Margo source`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			doc := strings.Replace(margoYAML, tt.from, tt.to, 1)
			if doc == margoYAML {
				t.Fatalf("%q not found", tt.from)
			}
			_, err := Parse("agent.yaml", []byte(doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			var pe *Error
			if !errors.As(err, &pe) || pe.Line == 0 {
				t.Errorf("error not located: %#v", err)
			}
		})
	}
	// Without margo, sources stay required.
	if _, err := Parse("agent.yaml", []byte("apply: {compose: {}}\n")); err == nil || !strings.Contains(err.Error(), `missing required field "sources"`) {
		t.Errorf("no sources, no margo: %v", err)
	}
}

// TestCheckMargo: --check-config checks the chain, the expiry and the
// SPIFFE IDs with certificates minted for the test.
func TestCheckMargo(t *testing.T) {
	w := margotest.Start(t, margotest.Options{})
	dir := t.TempDir()
	write := func(name string, s margotest.SVID) margotest.Files {
		return w.CA.WriteIdentity(t, filepath.Join(dir, name), s)
	}
	good := write("good", w.ClientSVID(t, "press-07", margotest.SVIDOptions{}))
	expired := write("expired", w.ClientSVID(t, "press-07", margotest.SVIDOptions{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Minute)}))
	notClient := write("notclient", w.CA.Mint(t, "spiffe://plant.example/other", margotest.SVIDOptions{}))
	foreign := good
	foreign.Bundle = filepath.Join(dir, "foreign.pem")
	os.WriteFile(foreign.Bundle, margotest.NewCA(t, "plant.example").BundlePEM(), 0o600)
	conf := func(f margotest.Files, wfmID string) string {
		s := "margo:\n  wfm: " + w.URL + "\n  deviceId: press-07\n  insecureSkipVerify: true\n  identity: {cert: " + f.Cert + ", key: " + f.Key + ", trustBundle: " + f.Bundle + "}\n"
		if wfmID != "" {
			s += "  wfmID: " + wfmID + "\n"
		}
		return s + "stateDir: " + dir + "\napply: {compose: {}}\n"
	}
	tests := []struct {
		name, yaml, want string
	}{
		{"good", conf(good, w.ID), ""},
		{"good, derived wfmID", conf(good, ""), ""},
		{"expired", conf(expired, ""), "margo.identity.cert: SVID"},
		{"not a client SVID", conf(notClient, ""), "is not a WFM client identity"},
		{"untrusted chain", conf(foreign, ""), "does not verify against the trust bundle"},
		{"wrong wfmID", conf(good, "spiffe://plant.example/margo/wfm/line-4"), "margo.wfmID: the configured WFM SPIFFE ID"},
		{"no applier", strings.Replace(conf(good, ""), "apply: {compose: {}}\n", "", 1), "no applier is configured"},
	}
	misCA := filepath.Join(dir, "mis-ca.pem")
	os.WriteFile(misCA, w.CA.BundlePEM(), 0o600)
	withTB := func(s, tb string) string {
		return strings.Replace(s, "  insecureSkipVerify: true\n", "  insecureSkipVerify: true\n  trustBundle: "+tb+"\n", 1)
	}
	tests = append(tests, []struct{ name, yaml, want string }{
		{"trust bundle", withTB(conf(good, ""), "{uri: \"https://mis.plant.local/b\", caFile: "+misCA+"}"), ""},
		{"trust bundle caFile not PEM", withTB(conf(good, ""), "{uri: \"https://mis.plant.local/b\", caFile: "+good.Key+"}"), "margo.trustBundle.caFile: " + good.Key + " holds no PEM certificate"},
		{"corrupt trust bundle cache", withTB(conf(good, ""), "{discovery: \"https://mis.plant.local\"}"), "trust bundle cache"},
	}...)
	if err := os.MkdirAll(filepath.Join(dir, "margo"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cache := filepath.Join(dir, "margo", "trust-bundle.json")
			os.Remove(cache)
			if strings.HasPrefix(tt.name, "corrupt") {
				os.WriteFile(cache, []byte("{"), 0o600)
			}
			c, err := Parse(filepath.Join(dir, "agent.yaml"), []byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			err = c.Check()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check = %v, want %q", err, tt.want)
			}
		})
	}
	// A configuration built in code gets the URI checked too.
	c, err := Parse(filepath.Join(dir, "agent.yaml"), []byte(withTB(conf(good, ""), "{uri: \"https://mis.plant.local/b\"}")))
	if err != nil {
		t.Fatal(err)
	}
	c.Margo.TrustBundle.URI = "http://mis.plant.local/b"
	if err := c.Check(); err == nil || !strings.Contains(err.Error(), "margo.trustBundle.uri: \"http://mis.plant.local/b\" must be an https:// URL") {
		t.Fatalf("Check = %v, want the bad trustBundle URI", err)
	}
}
