package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/selector"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata")

// name is the file name the tests parse under.
const name = "agent.yaml"

func parseFile(t *testing.T, file, as string) (*Config, error) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return Parse(as, data)
}

// TestParseGood parses every valid file of testdata.
func TestParseGood(t *testing.T) {
	files, _ := filepath.Glob("testdata/good/*.yaml")
	files = append(files, "testdata/full.yaml")
	if len(files) < 2 {
		t.Fatal("no test files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := parseFile(t, f, name)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(c.Sources) == 0 || c.File != name {
				t.Errorf("config = %+v", c)
			}
		})
	}
}

// TestParseExample parses the example configuration the repository ships,
// when there is one.
func TestParseExample(t *testing.T) {
	const example = "../../examples/agent.yaml"
	if _, err := os.Stat(example); err != nil {
		t.Skip(err)
	}
	c, err := parseFile(t, example, "/etc/berth/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range c.Sources {
		if s.Ref.Semver != "" || s.Filter != nil {
			if _, err := selector.New(s.SelectorPolicy()); err != nil {
				t.Errorf("source %s: %v", s.Name, err)
			}
		}
	}
}

// TestParseMinimal checks every default.
func TestParseMinimal(t *testing.T) {
	c, err := parseFile(t, "testdata/good/minimal.yaml", "/etc/berth/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c.lines = nil
	want := &Config{
		File:          "/etc/berth/agent.yaml",
		StateDir:      "/var/lib/berth",
		KeepRevisions: 5,
		Socket:        "/var/lib/berth/berth.sock",
		Log:           Log{Format: "text", Level: "info"},
		Sources: []Source{{
			Name:             "line-3",
			URL:              "oci://registry.plant.local/fleet/line-3",
			Registry:         "registry.plant.local",
			Repository:       "fleet/line-3",
			Ref:              Ref{Tag: "stable"},
			Interval:         5 * time.Minute,
			Timeout:          time.Minute,
			ReconcileTimeout: 10 * time.Minute,
			Jitter:           0.1,
			Verify:           &Verify{Keys: []string{"/etc/berth/cosign.pub"}},
			Limits:           defaultLimits,
		}},
		Apply:        Apply{Compose: ComposeOptions{WaitTimeout: 2 * time.Minute}},
		Bundles:      Bundles{Timeout: DefaultBundlesTimeout},
		MinFreeSpace: MinFreeSpace{Bytes: 1 << 30, Percent: 10},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %#v\nwant %#v", c, want)
	}
	if c.StateDir != DefaultStateDir || c.KeepRevisions != DefaultKeepRevisions || c.Sources[0].Interval != DefaultInterval ||
		c.Sources[0].Timeout != DefaultTimeout || c.Sources[0].Jitter != DefaultJitter || c.Apply.Compose.WaitTimeout != DefaultComposeWaitTimeout {
		t.Error("the defaults are not the documented constants")
	}
}

// TestParseFull checks every field of testdata/full.yaml.
func TestParseFull(t *testing.T) {
	c, err := parseFile(t, "testdata/full.yaml", "/etc/berth/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.lines["sources[0].verify.keys[1]"] != 23 || c.lines["apply.helm.valuesDir"] != 75 {
		t.Errorf("lines = %v", c.lines)
	}
	c.lines = nil
	// Parse made the resolver of registries: once, for every fetch.
	if m, err := c.Mirrors(); m == nil || err != nil || m != c.mirrors {
		t.Errorf("Mirrors() = %v, %v; want the resolver Parse made", m, err)
	} else if eps := m.Endpoints("ghcr.io/acme/web@sha256:" + strings.Repeat("0", 64)); len(eps) != 2 || eps[0].Mirror != "registry.plant.local/acme" {
		t.Errorf("resolver endpoints = %+v", eps)
	}
	c.mirrors, c.mirrorsOf = nil, nil
	defaults := Limits{MaxSize: archive.DefaultMaxSize, MaxFiles: archive.DefaultMaxFiles, MaxTags: 100_000, MaxTagPages: 10_000, MaxReferrers: 1000, MaxSignatures: 32}
	pub := []string{"/etc/berth/cosign.pub"}
	want := &Config{
		File:           "/etc/berth/agent.yaml",
		StateDir:       "/var/lib/berth-test",
		KeepRevisions:  3,
		AllowDowngrade: true,
		Listen:         "127.0.0.1:9797",
		Socket:         "/run/berth/berth.sock",
		Log:            Log{Format: "json", Level: "debug"},
		Extensions:     []string{"usbguard", "vpn"},
		MaxBandwidth:   3 << 19,
		MinFreeSpace:   MinFreeSpace{Percent: 5},
		Sources: []Source{
			{
				Name:             "line-3",
				URL:              "oci://registry.plant.local/fleet/line-3",
				Registry:         "registry.plant.local",
				Repository:       "fleet/line-3",
				Ref:              Ref{Semver: ">=1.4.0 <2.0.0", SemverFilter: "^v"},
				LayerSelector:    LayerSelector{MediaType: "application/vnd.cncf.flux.content.v1.tar+gzip"},
				Interval:         time.Minute,
				Timeout:          30 * time.Second,
				ReconcileTimeout: 5 * time.Minute,
				Jitter:           0.2,
				Suspend:          true,
				Verify: &Verify{
					Keys: []string{"/etc/berth/cosign.pub", "/etc/berth/keys/rotated.pub", "env://COSIGN_PUBLIC_KEY"},
					Keyless: &Keyless{
						TrustedRoot: "/etc/berth/trusted_root.json",
						Identities: []Identity{
							{Issuer: `^https://token\.actions\.githubusercontent\.com$`, Subject: `^https://github\.com/acme/`},
							{Issuer: `^https://accounts\.google\.com$`, Subject: `^ops@acme\.example$`},
						},
					},
				},
				Credentials:  Credentials{DockerConfig: "/etc/berth/docker/config.json"},
				CAFile:       "/etc/berth/plant-ca.pem",
				Limits:       Limits{MaxSize: 1 << 30, MaxFiles: 5000, MaxTags: 500, MaxTagPages: 20, MaxReferrers: 50, MaxSignatures: 4},
				MaxBandwidth: 256 << 10,
			},
			{
				Name:               "lab",
				URL:                "oci://10.0.0.5:5000/fleet/lab",
				Registry:           "10.0.0.5:5000",
				Repository:         "fleet/lab",
				Filter:             &Filter{Pattern: `^main-[a-f0-9]+-(?P<ts>[0-9]+)$`, Extract: "$ts", Order: "numerical", Direction: "desc"},
				Interval:           DefaultInterval,
				Timeout:            DefaultTimeout,
				ReconcileTimeout:   ReconcileTimeoutFactor * DefaultTimeout,
				Jitter:             DefaultJitter,
				InsecureSkipVerify: true,
				Insecure:           true,
				Limits:             defaults,
			},
			{
				Name:             "pinned",
				URL:              "oci://ghcr.io/acme/fleet/pinned",
				Registry:         "ghcr.io",
				Repository:       "acme/fleet/pinned",
				Ref:              Ref{Digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
				Interval:         DefaultInterval,
				Timeout:          DefaultTimeout,
				ReconcileTimeout: ReconcileTimeoutFactor * DefaultTimeout,
				Jitter:           DefaultJitter,
				Verify:           &Verify{Keys: pub},
				Limits:           defaults,
			},
			{
				Name:             "canary",
				URL:              "oci://localhost:5000/canary",
				Registry:         "localhost:5000",
				Repository:       "canary",
				Ref:              Ref{Tag: "canary"},
				Interval:         DefaultInterval,
				Timeout:          DefaultTimeout,
				ReconcileTimeout: ReconcileTimeoutFactor * DefaultTimeout,
				Jitter:           DefaultJitter,
				Verify: &Verify{Keyless: &Keyless{
					TrustedRoot: "/etc/berth/trusted_root.json",
					Identities:  []Identity{{Issuer: "https://issuer", Subject: "x"}},
				}},
				Limits: defaults,
			},
			{
				Name:             "releases",
				URL:              "oci://[::1]:5000/fleet/releases",
				Registry:         "[::1]:5000",
				Repository:       "fleet/releases",
				Ref:              Ref{Semver: ">=2.0.0-0"},
				Filter:           &Filter{Pattern: "^release-(?P<v>.+)$", Extract: "${v}", Order: "semver", Direction: "asc"},
				Interval:         DefaultInterval,
				Timeout:          DefaultTimeout,
				ReconcileTimeout: ReconcileTimeoutFactor * DefaultTimeout,
				Jitter:           DefaultJitter,
				Verify:           &Verify{Keys: pub},
				Limits:           defaults,
			},
		},
		Registries: []Registry{
			{Source: "ghcr.io/acme", Mirrors: []string{"registry.plant.local/acme", "10.0.0.5:5000/acme"}, AllowTags: true, SourceFallback: false},
			{Source: "docker.io", Mirrors: []string{"registry.plant.local/dockerhub"}, SourceFallback: true},
		},
		Bundles: Bundles{Timeout: DefaultBundlesTimeout},
		Apply: Apply{
			Compose: ComposeOptions{Enabled: true, Host: "unix:///var/run/docker.sock", WaitTimeout: 2 * time.Minute, EnvDir: "/etc/berth/env"},
			Helm:    HelmOptions{Enabled: true, Kubeconfig: "/etc/rancher/k3s/k3s.yaml", ValuesDir: "/etc/berth/values"},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
		for i := range min(len(c.Sources), len(want.Sources)) {
			if g, w := c.Sources[i], want.Sources[i]; !reflect.DeepEqual(g, w) {
				t.Errorf("source %d:\ngot  %+v %+v %+v\nwant %+v %+v %+v", i, g, g.Filter, g.Verify, w, w.Filter, w.Verify)
			}
		}
	}

	// The tag policies, as the agent builds its selectors.
	policies := map[string]selector.Policy{
		"line-3":   {Semver: ">=1.4.0 <2.0.0", SemverFilter: "^v"},
		"lab":      {Pattern: `^main-[a-f0-9]+-(?P<ts>[0-9]+)$`, Extract: "$ts", Order: "numerical", Direction: "desc"},
		"releases": {Semver: ">=2.0.0-0", Pattern: "^release-(?P<v>.+)$", Extract: "${v}", Order: "semver", Direction: "asc"},
	}
	for _, s := range c.Sources {
		p := s.SelectorPolicy()
		want, ok := policies[s.Name]
		if !ok {
			if p != (selector.Policy{}) {
				t.Errorf("%s: policy %+v, want none", s.Name, p)
			}
			continue
		}
		if p != want {
			t.Errorf("%s: policy %+v, want %+v", s.Name, p, want)
		}
		if _, err := selector.New(p); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		}
	}
}

// TestParseBad parses every file of testdata/bad and compares the error
// with the file's .golden.
func TestParseBad(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(files) == 0 {
		t.Fatal("no test files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := parseFile(t, f, name)
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", c)
			}
			if c != nil {
				t.Errorf("Parse returned a config with an error")
			}
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var pe *Error
				if !errors.As(e, &pe) {
					t.Errorf("%v is not an *Error", e)
				} else if pe.Line == 0 && !strings.Contains(f, "empty") {
					t.Errorf("%v has no line", e)
				}
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("a password reached the error: %v", err)
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if got != string(want) {
				t.Errorf("errors:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// TestParseErrorShape checks the exact shape of an error.
func TestParseErrorShape(t *testing.T) {
	data := `# agent
stateDir: /var/lib/berth
sources:
  - name: line-2
    url: oci://registry.plant.local/fleet/line-2
    ref: {tag: stable}
    verify: {keys: [/etc/berth/cosign.pub]}

  - name: line-3
    url: oci://registry.plant.local/fleet/line-3
    verify: {keys: [/etc/berth/cosign.pub]}
    ref: {tag: stable, semver: ">=1.0.0"}
`
	_, err := Parse(name, []byte(data))
	want := `agent.yaml:12: sources[1].ref: give exactly one of tag, digest or semver`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %s", err, want)
	}
	var pe *Error
	if !errors.As(err, &pe) || pe.Line != 12 || pe.Field != "sources[1].ref" || pe.File != name {
		t.Errorf("error = %#v", pe)
	}
}

func TestRelativePaths(t *testing.T) {
	data := []byte(`stateDir: state
sources:
  - name: a
    url: oci://r.example/a
    ref: {tag: x}
    verify: {keys: [keys/a.pub, /abs/b.pub, ../c.pub]}
    caFile: ./ca.pem
`)
	c, err := Parse("/etc/berth/agent.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Sources[0]
	if c.StateDir != "/etc/berth/state" || c.Socket != "/etc/berth/state/berth.sock" || s.CAFile != "/etc/berth/ca.pem" ||
		!reflect.DeepEqual(s.Verify.Keys, []string{"/etc/berth/keys/a.pub", "/abs/b.pub", "/etc/c.pub"}) {
		t.Errorf("paths: %s %s %s %q", c.StateDir, c.Socket, s.CAFile, s.Verify.Keys)
	}
	c, err = Parse("agent.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "state" || c.Sources[0].Verify.Keys[0] != "keys/a.pub" {
		t.Errorf("paths next to a relative file: %s %q", c.StateDir, c.Sources[0].Verify.Keys)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "agent.yaml")
	write(t, good, "sources:\n  - {name: a, url: 'oci://r.example/a', ref: {tag: x}, verify: {keys: [k.pub]}}\n")
	c, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	if c.File != good || c.Sources[0].Verify.Keys[0] != filepath.Join(dir, "k.pub") {
		t.Errorf("Load = %+v", c)
	}

	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}

	big := filepath.Join(dir, "big.yaml")
	write(t, big, strings.Repeat("#", MaxFileSize+1))
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "big.yaml: larger than 1048576 bytes") {
		t.Errorf("large file: %v", err)
	}

	if _, err := Load(dir); err == nil {
		t.Error("Load of a folder succeeded")
	}

	bad := filepath.Join(dir, "bad.yaml")
	write(t, bad, "sources: 5\n")
	if _, err := Load(bad); err == nil || err.Error() != bad+":1: sources: must be a list, got the number 5" {
		t.Errorf("bad file: %v", err)
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	_, pub, err := cosign.GenerateKeyPair([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "cosign.pub"), string(pub))
	write(t, filepath.Join(dir, "ca.pem"), string(selfSignedPEM(t)))
	write(t, filepath.Join(dir, "docker/config.json"), `{"auths": {}}`)
	write(t, filepath.Join(dir, "kubeconfig"), "apiVersion: v1\n")
	write(t, filepath.Join(dir, "env/web.env"), "A=1\n")
	write(t, filepath.Join(dir, "values/web.yaml"), "a: 1\n")
	write(t, filepath.Join(dir, "not-a-key.pub"), "hello\n")
	write(t, filepath.Join(dir, "trusted_root.json"), "{not json")
	write(t, filepath.Join(dir, "afile"), "x\n")
	t.Setenv("BERTH_TEST_KEY", string(pub))

	good := filepath.Join(dir, "good.yaml")
	write(t, good, `stateDir: state
sources:
  - name: a
    url: oci://r.example/a
    ref: {tag: x}
    verify: {keys: [cosign.pub, env://BERTH_TEST_KEY]}
    credentials: {dockerConfig: docker/config.json}
    caFile: ca.pem
apply:
  compose: {envDir: env}
  helm: {kubeconfig: kubeconfig, valuesDir: values}
device: {id: press-07}
`)
	c, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}

	bad := filepath.Join(dir, "bad.yaml")
	write(t, bad, `stateDir: afile
sources:
  - name: a
    url: oci://r.example/a
    ref: {tag: x}
    verify:
      keys: [missing.pub, not-a-key.pub, env://BERTH_UNSET_KEY, docker]
      keyless:
        trustedRoot: trusted_root.json
        identities: [{issuer: x, subject: y}]
    credentials: {dockerConfig: kubeconfig}
    caFile: cosign.pub
  - name: b
    url: oci://r.example/b
    ref: {tag: x}
    verify:
      keyless: {trustedRoot: nothing.json, identities: [{issuer: x, subject: y}]}
    credentials: {dockerConfig: nothing.json}
apply:
  compose: {envDir: afile}
  helm: {kubeconfig: env, valuesDir: nothing}
device:
  idFile: afile
`)
	c, err = Load(bad)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Check()
	if err == nil {
		t.Fatal("Check succeeded")
	}
	got := strings.ReplaceAll(err.Error(), dir, "$DIR")
	for _, want := range []string{
		`bad.yaml:1: stateDir: $DIR/afile is not a folder`,
		`bad.yaml:7: sources[0].verify.keys[0]: cannot read $DIR/missing.pub: no such file or directory`,
		`bad.yaml:7: sources[0].verify.keys[1]: invalid key: public key $DIR/not-a-key.pub:`,
		`bad.yaml:7: sources[0].verify.keys[2]: key reference env://BERTH_UNSET_KEY: environment variable BERTH_UNSET_KEY is not set`,
		`bad.yaml:7: sources[0].verify.keys[3]: $DIR/docker is not a regular file`,
		`bad.yaml:9: sources[0].verify.keyless.trustedRoot: loading trusted root $DIR/trusted_root.json:`,
		`bad.yaml:11: sources[0].credentials.dockerConfig: $DIR/kubeconfig is not a Docker config.json:`,
		`bad.yaml:12: sources[0].caFile: $DIR/cosign.pub holds no PEM certificate`,
		`bad.yaml:17: sources[1].verify.keyless.trustedRoot: cannot read $DIR/nothing.json: no such file or directory`,
		`bad.yaml:18: sources[1].credentials.dockerConfig: cannot read $DIR/nothing.json: no such file or directory`,
		`bad.yaml:21: apply.helm.kubeconfig: $DIR/env is not a regular file`,
		`bad.yaml:20: apply.compose.envDir: $DIR/afile is not a folder`,
		`bad.yaml:21: apply.helm.valuesDir: cannot read $DIR/nothing: no such file or directory`,
		`bad.yaml:23: device.idFile: no stable device id: machine id $DIR/afile does not hold 32 lowercase hex digits`,
	} {
		if !strings.Contains(got, "$DIR/"+want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != 14 {
		t.Errorf("%d errors, want 14:\n%s", n, got)
	}
}

// selfSignedPEM returns a CA certificate in PEM.
func selfSignedPEM(t *testing.T) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "plant CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestMirrorHostNeedsRegistryName: a bare word is a Docker Hub repository to
// Docker, not a registry, so it is refused with a message saying why.
func TestMirrorHostNeedsRegistryName(t *testing.T) {
	for _, tc := range []struct {
		mirror string
		ok     bool
	}{
		{"registry.plant.local/acme", true},
		{"plant:5000/acme", true},
		{"localhost/acme", true},
		{"10.0.0.5/acme", true},
		{"[::1]:5000/acme", true},
		{"plant/acme", false},
		{"plant", false},
	} {
		cfg := "sources:\n  - name: a\n    url: oci://r.example.com/x\n    ref: {tag: v1}\n    insecureSkipVerify: true\nregistries:\n  - source: ghcr.io/acme\n    mirrors: [\"" + tc.mirror + "\"]\n"
		_, err := Parse("agent.yaml", []byte(cfg))
		if tc.ok && err != nil {
			t.Errorf("mirror %q: %v", tc.mirror, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "does not name a registry host")) {
			t.Errorf("mirror %q: err = %v, want a clear refusal", tc.mirror, err)
		}
	}
}

func TestParseBundleSource(t *testing.T) {
	c, err := parseFile(t, "testdata/good/bundle.yaml", "/etc/berth/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	usb := c.Sources[0]
	want := Source{
		Name: "usb", URL: "file:///media/usb/site.tar", File: "/media/usb/site.tar",
		Interval: 30 * time.Second, Timeout: DefaultTimeout, ReconcileTimeout: ReconcileTimeoutFactor * DefaultTimeout, Jitter: DefaultJitter,
		Verify:        &Verify{Keys: []string{"/etc/berth/cosign.pub"}},
		LayerSelector: LayerSelector{MediaType: "application/vnd.cncf.flux.content.v1.tar+gzip"},
		Limits:        Limits{MaxSize: 1000000, MaxFiles: defaultLimits.MaxFiles, MaxTags: defaultLimits.MaxTags, MaxTagPages: defaultLimits.MaxTagPages, MaxReferrers: defaultLimits.MaxReferrers, MaxSignatures: defaultLimits.MaxSignatures},
		Credentials:   Credentials{DockerConfig: "/etc/berth/docker/config.json"},
		CAFile:        "/etc/berth/plant-ca.pem",
	}
	if !reflect.DeepEqual(usb, want) {
		t.Errorf("bundle source:\ngot  %+v\nwant %+v", usb, want)
	}
	wantBundles := Bundles{PushTo: "localhost:5000/site", Insecure: true, Credentials: Credentials{DockerConfig: "/etc/berth/docker.json"}, Timeout: DefaultBundlesTimeout}
	if c.Bundles != wantBundles {
		t.Errorf("bundles = %+v, want %+v", c.Bundles, wantBundles)
	}
	if c.Sources[1].File != "" || c.Sources[1].Registry != "registry.plant.local" {
		t.Errorf("registry source = %+v", c.Sources[1])
	}
}

func TestSourceFallbackComposition(t *testing.T) {
	// Two entries for one source, one turning the fallback off: the tag
	// source has nowhere to resolve its tag, which Parse reports.
	base := "sources:\n  - {name: a, url: 'oci://ghcr.io/acme/a', ref: {tag: x}, insecureSkipVerify: true}\nregistries:\n"
	for _, tc := range []struct {
		regs string
		ok   bool
	}{
		{"  - {source: ghcr.io/acme, mirrors: [a.local/acme]}\n", true},
		{"  - {source: ghcr.io/acme, mirrors: [a.local/acme], sourceFallback: false}\n  - {source: ghcr.io/acme, mirrors: [b.local/acme]}\n", false},
		{"  - {source: ghcr.io/acme, mirrors: [a.local/acme], sourceFallback: false, allowTags: true}\n", true},
		{"  - {source: ghcr.io, mirrors: [a.local], sourceFallback: false}\n  - {source: ghcr.io/acme, mirrors: [b.local/acme]}\n", true},
	} {
		_, err := Parse(name, []byte(base+tc.regs))
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok %v", tc.regs, err, tc.ok)
		}
	}
}
