package labels

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	long := strings.Repeat("a", 64)
	for _, tc := range []struct {
		key, value string
		keyOK      bool
		valueOK    bool
	}{
		{"ring", "canary", true, true},
		{"berth.dev/line", "3", true, true},
		{"site", "", true, true},
		{"My.Name_1", "my_value-2", true, true},
		{"", "x", false, true},
		{"-ring", "-canary", false, false},
		{"a/b/c", "a b", false, false},
		{"Bad.Prefix/x", "x", false, true},
		{long, long, false, false},
		{"/name", "ok", false, true},
	} {
		if err := CheckKey(tc.key); (err == nil) != tc.keyOK {
			t.Errorf("CheckKey(%q) = %v, want ok %v", tc.key, err, tc.keyOK)
		}
		if err := CheckValue(tc.value); (err == nil) != tc.valueOK {
			t.Errorf("CheckValue(%q) = %v, want ok %v", tc.value, err, tc.valueOK)
		}
	}
}

func TestMatch(t *testing.T) {
	l := map[string]string{"ring": "canary", "line": "3"}
	for _, tc := range []struct {
		sel  map[string]string
		want bool
	}{
		{nil, true},
		{map[string]string{"ring": "canary"}, true},
		{map[string]string{"ring": "canary", "line": "3"}, true},
		{map[string]string{"ring": "stable"}, false},
		{map[string]string{"site": ""}, false},
		{map[string]string{"ring": "canary", "site": "berlin"}, false},
	} {
		if got := Match(tc.sel, l); got != tc.want {
			t.Errorf("Match(%v) = %v, want %v", tc.sel, got, tc.want)
		}
	}
}

func TestPrometheusName(t *testing.T) {
	for in, want := range map[string]string{
		"ring": "ring", "line": "line", "Site_2": "Site_2",
		"topology.zone": "topology_zone", "kubernetes.io/arch": "kubernetes_io_arch",
		"3d": "_3d", "": "device_", "source": "device_source", "device": "device_device",
		"le": "device_le", "__meta": "device___meta", "zone-ü": "zone__",
	} {
		if got := PrometheusName(in); got != want {
			t.Errorf("PrometheusName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := PrometheusLabels(map[string]string{"a.b": "1", "a_b": "2", "c": "3"}); len(got) != 2 || got["a_b"] != "1" || got["c"] != "3" {
		t.Errorf("PrometheusLabels = %v: a.b sorts first and wins a_b", got)
	}
}
