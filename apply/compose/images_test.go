package compose

import (
	"context"
	"encoding/base64"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/moby/moby/client"
)

// TestPullFromRegistry checks the pull path: a pinned image missing from
// the engine is pulled with the Docker config's credentials, and not pulled
// again once present. The registry runs in-process on 127.0.0.1, which the
// engine reaches over plain HTTP (127.0.0.0/8 is an insecure registry by
// default).
func TestPullFromRegistry(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const user, pass = "berth", "s3cret"
	var manifests atomic.Int32
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="berth-test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		if strings.Contains(r.URL.Path, "/manifests/") && r.Method == http.MethodGet {
			manifests.Add(1)
		}
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	img := helloImage(t, "pulled")
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	tag := host + "/berth-ctest/" + runID + "/hello:v1"
	ref, err := name.ParseReference(tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: user, Password: pass})); err != nil {
		t.Fatal(err)
	}
	pinned := tag + "@" + digest.String()
	t.Cleanup(func() {
		f.dc.ImageRemove(context.Background(), pinned, client.ImageRemoveOptions{Force: true})
	})
	cfg := `{"auths": {"` + host + `": {"auth": "` + base64.StdEncoding.EncodeToString([]byte(user+":"+pass)) + `"}}}`
	if err := os.WriteFile(f.a.opts.DockerConfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	src := source("pull")
	port := freePort(t)
	rev := revision(t, src, "v1", stateYAML("web"), map[string]string{"apps/web/compose.yaml": webCompose(pinned, port)})
	if _, err := f.a.Apply(ctx, rev, nil); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if got := get(t, port); got != "pulled" {
		t.Errorf("serves %q", got)
	}
	n := manifests.Load()
	if n == 0 {
		t.Errorf("the image was not pulled from the registry")
	}
	// Present now: another revision, and a drift restore, do not pull.
	rev2 := revision(t, src, "v2", stateYAML("web"), map[string]string{"apps/web/compose.yaml": webCompose(pinned, port)})
	if _, err := f.a.Apply(ctx, rev2, &rev); err != nil {
		t.Fatalf("apply again: %v", err)
	}
	if m := manifests.Load(); m != n {
		t.Errorf("pulled again: %d manifest requests, then %d", n, m)
	}
	// Down the project, so that the image can be removed.
	if _, err := f.a.Apply(ctx, revision(t, src, "v3", stateYAML(), map[string]string{}), &rev2); err != nil {
		t.Fatal(err)
	}

	// Wrong credentials: the error says what failed and on what.
	if err := os.WriteFile(f.a.opts.DockerConfig, []byte(`{"auths": {}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	a2, err := New(ctx, Options{Host: dockerHost(), EnvDir: t.TempDir(), DockerConfig: f.a.opts.DockerConfig})
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	other := host + "/berth-ctest/" + runID + "/absent@" + digest.String()
	_, err = a2.pull(ctx, other)
	t.Logf("pull without credentials: %v", err)
	if err == nil || !strings.Contains(err.Error(), "pull "+other) {
		t.Errorf("pull without credentials: %v", err)
	}
}
