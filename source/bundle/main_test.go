package bundle

import (
	"os"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBuildDir()
	os.Exit(code)
}
