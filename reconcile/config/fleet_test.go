package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestParseFleet checks device and windows, global and per source.
func TestParseFleet(t *testing.T) {
	c, err := parseFile(t, "testdata/good/fleet.yaml", "/etc/berth/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	wantDev := Device{ID: "press-07", Labels: map[string]string{"ring": "canary", "line": "3", "site": "berlin", "berth.dev/hall": "h2", "empty": ""}}
	if !reflect.DeepEqual(c.Device, wantDev) {
		t.Errorf("device = %+v, want %+v", c.Device, wantDev)
	}
	apply := "mon,tue,wed,thu,fri 22:00-05:00 Europe/Berlin; sat,sun 00:00-24:00 UTC"
	for _, tc := range []struct {
		what            string
		w               Windows
		apply, download string
		applyNil, dlNil bool
	}{
		{"global", c.Windows, apply, "always", false, true},
		{"line-3 inherits", c.Sources[0].Windows, apply, "always", false, true},
		{"metered overrides download", c.Sources[1].Windows, apply, "daily 01:00-03:00 America/New_York", false, false},
		{"anytime overrides apply", c.Sources[2].Windows, "always", "always", true, true},
	} {
		if got := tc.w.Apply.String(); got != tc.apply || (tc.w.Apply == nil) != tc.applyNil {
			t.Errorf("%s: apply = %q (nil %v), want %q", tc.what, got, tc.w.Apply == nil, tc.apply)
		}
		if got := tc.w.Download.String(); got != tc.download || (tc.w.Download == nil) != tc.dlNil {
			t.Errorf("%s: download = %q, want %q", tc.what, got, tc.download)
		}
	}
	// Friday 23:00 in Berlin (22:00Z in winter) is inside; Friday noon is not.
	if !c.Sources[0].Windows.Apply.Contains(time.Date(2026, 1, 9, 22, 0, 0, 0, time.UTC)) ||
		c.Sources[0].Windows.Apply.Contains(time.Date(2026, 1, 9, 12, 0, 0, 0, time.UTC)) {
		t.Error("the parsed windows are not the ones written")
	}
	// Without device nor windows: no labels, always.
	m, err := parseFile(t, "testdata/good/minimal.yaml", "agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if m.Device.ID != "" || m.Device.Labels != nil || m.Windows.Apply != nil || m.Sources[0].Windows.Download != nil {
		t.Errorf("defaults: device %+v, windows %+v", m.Device, m.Sources[0].Windows)
	}
}

// TestIdentity checks the device id: device.id, else derived from the
// machine id exactly as `systemd-id128 machine-id --app-specific=...`
// derives it, else a refusal.
func TestIdentity(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Computed with systemd-id128 machine-id --app-specific=2c41e9608f9f43d0a7896161b069fa46
	// on a machine whose /etc/machine-id held 3d1219c7c4c5404aaa1f6d2a48adfda4.
	good := write("machine-id", "3d1219c7c4c5404aaa1f6d2a48adfda4\n")
	for _, tc := range []struct {
		name    string
		dev     Device
		want    string
		wantErr string
	}{
		{"configured", Device{ID: "press-07", IDFile: good}, "press-07", ""},
		{"derived", Device{IDFile: good}, "bdf10d7453e942d5a5e9dcdc64a46850", ""},
		{"missing", Device{IDFile: filepath.Join(dir, "nope")}, "", "no such file"},
		{"empty", Device{IDFile: write("empty", "")}, "", "32 lowercase hex"},
		{"uninitialized", Device{IDFile: write("uninit", "uninitialized\n")}, "", "not initialized"},
		{"zeros", Device{IDFile: write("zeros", strings.Repeat("0", 32)+"\n")}, "", "all zeros"},
		{"upper case", Device{IDFile: write("upper", "3D1219C7C4C5404AAA1F6D2A48ADFDA4\n")}, "", "32 lowercase hex"},
		{"not hex", Device{IDFile: write("nothex", strings.Repeat("g", 32)+"\n")}, "", "32 lowercase hex"},
		{"a folder", Device{IDFile: dir}, "", "machine id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.dev.Labels = map[string]string{"ring": "canary"}
			got, err := tc.dev.Identity()
			if tc.wantErr != "" {
				if !errors.Is(err, ErrNoDeviceID) || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "device.id") {
					t.Fatalf("err = %v, want ErrNoDeviceID saying %q and how to fix it", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != tc.want || got.Labels["ring"] != "canary" {
				t.Errorf("identity = %+v, want id %s", got, tc.want)
			}
			tc.dev.Labels["ring"] = "changed"
			if got.Labels["ring"] != "canary" {
				t.Error("the identity shares the configuration's labels")
			}
		})
	}
}
