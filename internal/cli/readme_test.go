package cli

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeCommandsSection: the README's "## <N> commands" section lists
// N commands, each a make target that exists (issue 14, point 13: "Two
// commands" listed three).
func TestReadmeCommandsSection(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)\n## (\\w+) commands\n.*?```sh\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README has no \"## N commands\" section with a sh block")
	}
	words := map[string]int{"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
	want, ok := words[strings.ToLower(string(m[1]))]
	if !ok {
		t.Fatalf("heading %q: spell the number out", m[1])
	}
	var cmds []string
	for _, l := range strings.Split(strings.TrimSpace(string(m[2])), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "make" {
			t.Errorf("line %q is not a make command", l)
			continue
		}
		cmds = append(cmds, f[1])
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(f[1]) + `:`).Match(makefile) {
			t.Errorf("make %s: no such target in the Makefile", f[1])
		}
	}
	if len(cmds) != want {
		t.Errorf("\"## %s commands\" lists %d: %v", m[1], len(cmds), cmds)
	}
}
