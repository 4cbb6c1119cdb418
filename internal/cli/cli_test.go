package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestEveryCommandHasHelpWithExample walks the command tree: every command
// runs --help successfully and shows an example.
func TestEveryCommandHasHelpWithExample(t *testing.T) {
	root := newRoot(&globals{})
	var walk func(c *cobra.Command)
	seen := 0
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			seen++
			if strings.TrimSpace(sub.Example) == "" {
				t.Errorf("berth %s has no example", sub.CommandPath())
			}
			var out, errOut bytes.Buffer
			args := append(strings.Fields(strings.TrimPrefix(sub.CommandPath(), "berth ")), "--help")
			if code := Main(args, &out, &errOut); code != 0 || !strings.Contains(out.String(), "Examples:") {
				t.Errorf("berth %s: exit %d, help without examples:\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
			}
			walk(sub)
		}
	}
	walk(root)
	if seen < 10 {
		t.Fatalf("walked %d commands, want at least 10", seen)
	}
}

func TestBadGlobalFlags(t *testing.T) {
	for _, args := range [][]string{
		{"list", "oci://h/r", "--output", "yaml"},
		{"list", "oci://h/r", "--log-level", "loud"},
		{"list", "oci://h/r", "--log-format", "xml"},
		{"push", "dir", "oci://h/r@sha256:" + strings.Repeat("a", 64)},
		{"tag", "oci://h/r:v1"},
	} {
		var out, errOut bytes.Buffer
		if code := Main(args, &out, &errOut); code == 0 || !strings.HasPrefix(errOut.String(), "Error: ") {
			t.Errorf("berth %v: exit %d, stderr %q; want a clear error", args, code, errOut.String())
		}
	}
}

func TestParseAnnotations(t *testing.T) {
	got, err := parseAnnotations([]string{"a=1", "b=x=y", "c="})
	if err != nil || got["a"] != "1" || got["b"] != "x=y" || got["c"] != "" {
		t.Fatalf("parseAnnotations = %v, %v", got, err)
	}
	if _, err := parseAnnotations([]string{"novalue"}); err == nil {
		t.Fatal("KEY without =VALUE accepted")
	}
}
