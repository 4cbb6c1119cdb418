package margo

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/source/margo/margotest"
)

// depYAML is an rc.3 ApplicationDeployment with id n (1..) and a
// revision.
func depYAML(n int, revision string) []byte {
	return []byte(fmt.Sprintf(`id: %08d-2a44-4c7e-9d51-7e3f5a0c9b21
metadata:
  name: app-%d
  namespace: margo-apps
  deviceId: press-42
spec:
  applicationId: acme-app-%d
  deploymentProfile:
    type: compose
    components:
      - name: web
        properties: {repository: oci://registry.local:5000/acme/web, revision: %s}
`, n, n, n, revision))
}

func depID(n int) string { return fmt.Sprintf("%08d-2a44-4c7e-9d51-7e3f5a0c9b21", n) }

type fixture struct {
	wfm   *margotest.WFM
	dir   string
	files margotest.Files
	c     *Client
}

func newFixture(t *testing.T, wo margotest.Options, mutate func(*Options)) *fixture {
	t.Helper()
	w := margotest.Start(t, wo)
	dir := t.TempDir()
	files := w.ClientFiles(t, filepath.Join(dir, "id"), "press-42")
	o := Options{
		URL: w.URL, DeviceID: "press-42", CacheDir: filepath.Join(dir, "cache"),
		Identity: Identity{CertFile: files.Cert, KeyFile: files.Key, TrustBundleFile: files.Bundle},
		WFMID:    w.ID, Timeout: 10 * time.Second,
		Log: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mutate != nil {
		mutate(&o)
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &fixture{wfm: w, dir: dir, files: files, c: c}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// requestsSince returns "METHOD path" of the requests after the first n.
func requestsSince(w *margotest.WFM, n int) []string {
	var out []string
	for _, r := range w.Requests()[n:] {
		out = append(out, r.Method+" "+r.Path)
	}
	return out
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
