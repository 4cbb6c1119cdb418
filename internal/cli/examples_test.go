package cli

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestCIExamplesUseRealFlags: every berth command in examples/ci names a
// command and flags berth has, so that the pipelines operators copy do
// not drift from the CLI (rollout watch's flags came after them).
func TestCIExamplesUseRealFlags(t *testing.T) {
	files, err := filepath.Glob("../../examples/ci/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("examples/ci: %v %v", files, err)
	}
	root := newRoot(&globals{})
	start := regexp.MustCompile(`(?:^|[|;]\s*|^-\s+)berth\s+(.*)$`)
	seen := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for i := 0; i < len(lines); i++ {
			line := strings.TrimSpace(lines[i])
			if strings.HasPrefix(line, "#") {
				continue
			}
			m := start.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			// The command, and its continuation lines (a trailing
			// backslash, or a YAML folded block's next lines of flags).
			words := strings.Fields(strings.TrimSuffix(m[1], `\`))
			for i+1 < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[i+1]), "--") {
				i++
				words = append(words, strings.Fields(strings.TrimSuffix(strings.TrimSpace(lines[i]), `\`))...)
			}
			if cut := slices.Index(words, "|"); cut >= 0 {
				words = words[:cut]
			}
			cmd, rest, err := root.Find(words)
			if err != nil || cmd == root {
				t.Errorf("%s: berth %s: no such command", filepath.Base(f), strings.Join(words, " "))
				continue
			}
			seen++
			for _, w := range rest {
				name, _, _ := strings.Cut(strings.TrimPrefix(w, "--"), "=")
				if !strings.HasPrefix(w, "--") {
					continue
				}
				if cmd.Flags().Lookup(name) == nil && cmd.InheritedFlags().Lookup(name) == nil {
					t.Errorf("%s: %s has no flag --%s", filepath.Base(f), cmd.CommandPath(), name)
				}
			}
		}
	}
	if seen < 4 {
		t.Errorf("found %d berth commands in examples/ci: the parser missed some", seen)
	}
}
