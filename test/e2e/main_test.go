// Package e2e runs the berth binary against real servers: Debian's
// docker-registry with TLS and htpasswd auth, started by internal/testenv.
// `make test` installs what these tests need; when something is missing
// they fail and say how to get it.
package e2e

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
