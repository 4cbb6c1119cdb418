package dist

import (
	"os/exec"
	"testing"
)

func TestDebVersion(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"v1.4.0", "1.4.0"},
		{"1.4.0", "1.4.0"},
		{"v1.4.0-3-gd94dc36", "1.4.0-3-gd94dc36"},
		{"v1.4.0-dirty", "1.4.0-dirty"},
		{"d94dc36", "0.0.0~d94dc36"},
		{"d94dc36-dirty", "0.0.0~d94dc36-dirty"},
		{"dev", "0.0.0~dev"},
		{"", "0.0.0~"},
	} {
		got := debVersion(tt.in)
		if got != tt.want {
			t.Errorf("debVersion(%q) = %q, want %q", tt.in, got, tt.want)
		}
		// dpkg is the judge where it is installed (make test installs it).
		if dpkg, err := exec.LookPath("dpkg"); err == nil && got != "0.0.0~" {
			if out, err := exec.Command(dpkg, "--validate-version", got).CombinedOutput(); err != nil {
				t.Errorf("dpkg --validate-version %q: %v: %s", got, err, out)
			}
		}
	}
}
