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
