package config

import "testing"

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1048576": 1 << 20, "1MiB": 1 << 20, "1 MiB": 1 << 20, "1.5MiB": 3 << 19, "512KiB": 512 << 10,
		"2GB": 2e9, "10KB": 10e3, "3B": 3, "1TiB": 1 << 40, " 7 ": 7,
	} {
		if got, ok := parseSize(in); !ok || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "fast", "1 mib", "-1MiB", "1e3", "1MiBs", "99999999999TiB", "1.MiB"} {
		if got, ok := parseSize(in); ok {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}
