package cli

import (
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// WriteDocs writes berth's shell completion scripts into dir/completion
// (berth.bash, _berth, berth.fish) and the man pages of berth and
// berth-agent, one per command, into dir/man, for packages and release
// archives.
func WriteDocs(dir string) error {
	comp, man := filepath.Join(dir, "completion"), filepath.Join(dir, "man")
	for _, d := range []string{comp, man} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	root := newRoot(&globals{})
	for name, gen := range map[string]func(string) error{
		"berth.bash": func(p string) error { return root.GenBashCompletionFileV2(p, true) },
		"_berth":     root.GenZshCompletionFile,
		"berth.fish": func(p string) error { return root.GenFishCompletionFile(p, true) },
	} {
		if err := gen(filepath.Join(comp, name)); err != nil {
			return err
		}
	}
	header := &doc.GenManHeader{Title: "BERTH", Section: "1", Source: "berth " + Version, Manual: "berth manual"}
	for _, r := range []*cobra.Command{root, newAgentRoot(&globals{}, nil)} {
		r.DisableAutoGenTag = true
		if err := doc.GenManTree(r, header, man); err != nil {
			return err
		}
	}
	return nil
}
