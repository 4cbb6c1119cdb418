package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMargoPublish runs berth margo compose-archive and berth margo
// package with the real binary against Debian's registry: both are
// reproducible, every manifest pushed is signed and verifies with berth
// verify, and bad input is refused with a clear error.
func TestMargoPublish(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	write := func(p, content string) {
		full := filepath.Join(dir, filepath.FromSlash(p))
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("app/margo.yaml", `apiVersion: margo.org/v1-alpha1
kind: ApplicationDescription
id: line-monitor
metadata:
  name: Line monitor
  version: 1.4.0
  catalog:
    application: {licenseFile: license.md}
    organization: [{name: Acme}]
deploymentProfiles:
  - type: compose
    id: compose
    components:
      - name: collector
        properties: {repository: `+e.url("acme/collector")+`, revision: 1.4.0}
`)
	write("app/license.md", "MIT\n")
	write("app/compose/collector/compose.yaml", "services:\n  c: {image: registry.local/acme/c@sha256:"+strings.Repeat("a", 64)+"}\n")

	type pushed struct {
		Kind, URL, Digest, Component string
		Built                        bool
	}
	var a1, a2 pushed
	e.okJSON(&a1, "margo", "compose-archive", filepath.Join(dir, "app/compose/collector"), e.url("acme/collector:1.4.0_rc.1"), "--sign-key", e.key)
	e.okJSON(&a2, "margo", "compose-archive", filepath.Join(dir, "app/compose/collector"), e.url("acme/collector:1.4.0_rc.1"))
	if a1.Digest == "" || a1.Digest != a2.Digest || a1.Kind != "compose" || !a1.Built {
		t.Fatalf("compose-archive: %+v then %+v", a1, a2)
	}
	e.ok("verify", e.url("acme/collector:1.4.0_rc.1"), "--key", e.pub)

	var p1, p2 struct {
		ApplicationID string
		Version       string
		Components    []pushed
		Package       pushed
	}
	e.okJSON(&p1, "margo", "package", filepath.Join(dir, "app"), e.url("acme/apps/line-monitor"), "--sign-key", e.key)
	e.okJSON(&p2, "margo", "package", filepath.Join(dir, "app"), e.url("acme/apps/line-monitor:1.4.0"))
	if p1.ApplicationID != "line-monitor" || len(p1.Components) != 1 || p1.Package.Digest != p2.Package.Digest || p1.Components[0].Digest != p2.Components[0].Digest {
		t.Fatalf("package: %+v then %+v", p1, p2)
	}
	e.ok("verify", e.url("acme/apps/line-monitor:1.4.0"), "--key", e.pub)
	e.ok("verify", e.url("acme/collector:1.4.0"), "--key", e.pub)
	// Text output names what was pushed and signed.
	out := e.ok("margo", "package", filepath.Join(dir, "app"), e.url("acme/apps/line-monitor"), "--sign-key", e.key)
	if !strings.Contains(out, "pushed compose collector") || !strings.Contains(out, "(signed, bundle)") {
		t.Errorf("text output:\n%s", out)
	}

	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"margo", "compose-archive", filepath.Join(dir, "app"), e.url("acme/x:1.0.0")}, "has no compose.yaml"},
		{[]string{"margo", "compose-archive", filepath.Join(dir, "app/compose/collector"), e.url("acme/x:v1")}, "not a SemVer 2.0 version"},
		{[]string{"margo", "package", filepath.Join(dir, "app"), e.url("acme/apps/line-monitor:2.0.0")}, "must equal metadata.version"},
	} {
		if msg := e.fail(bad.args...); !strings.Contains(msg, bad.want) {
			t.Errorf("berth %v: %q, want %q", bad.args, msg, bad.want)
		}
	}
}
