package materialize_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/apply/compose"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/margo/materialize"
	"github.com/berth-dev/berth/source/margo/pack"
	"github.com/berth-dev/berth/source/margo/spec"
	"github.com/berth-dev/berth/source/oci"
)

// TestComposeOnEngine runs a Margo Compose deployment end to end on the
// real parts: the Compose Archive and the image in Debian's
// docker-registry (TLS, htpasswd), the project on the real Docker Engine.
// The parameters reach the container as environment; then an update whose
// archive has a traversal entry is refused and the running app is kept.
func TestComposeOnEngine(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	docker := testenv.Docker(t)
	docker.TrustRegistry(t, reg)
	img := testenv.PushImage(t, reg, "acme/hello:v1", testenv.BuildHello(t), testenv.ImageOptions{})
	c, err := oci.NewClient(oci.Options{CAFile: reg.CAFile, DockerConfig: reg.DockerConfig})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Publish the component as berth margo compose-archive does.
	dir := t.TempDir()
	composeYAML := fmt.Sprintf(`services:
  web:
    image: %s@%s
    ports: ["127.0.0.1:${WEB_PORT}:8080"]
    environment: ["MESSAGE=${GREETING:-unset}"]
`, reg.Ref("acme/hello"), img)
	os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(composeYAML), 0o644)
	ref, _ := oci.ParseReference("oci://" + reg.Ref("acme/margo-web:1.0.0"))
	if _, err := pack.PushComposeArchive(ctx, c, pack.ComposeOptions{Dir: dir, Ref: ref}); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	yaml := func(rev string) string {
		return fmt.Sprintf(`id: 0b6c1f1e-2a44-4c7e-9d51-7e3f5a0c9b21
metadata: {name: line-monitor, namespace: margo-apps, deviceId: press-42}
spec:
  applicationId: acme-line-monitor
  deploymentProfile:
    type: compose
    components:
      - name: web
        properties: {repository: oci://%s, revision: %s}
  parameters:
    greeting: {value: from-margo, targets: [{pointer: GREETING, components: [web]}]}
    port: {value: %s, targets: [{pointer: ENV.WEB_PORT, components: [web]}]}
`, reg.Ref("acme/margo-web"), rev, port)
	}
	dep, err := spec.ParseDeployment("d", []byte(yaml("1.0.0")))
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	rand.Read(b)
	source := "mt" + hex.EncodeToString(b)
	t.Cleanup(func() { docker.RemoveProjectResources(t, "berth-"+source) })
	revs := t.TempDir()
	o := materialize.Options{
		Dir: filepath.Join(revs, "1"), Source: source, DeviceID: "press-42", Types: []string{"compose"},
		Fetcher: materialize.Registry{Remote: &deliver.Remote{Client: c}, Insecure: true}, ManifestVersion: 1,
	}
	res, err := materialize.Materialize(ctx, []materialize.Deployment{{Digest: "sha256:01", Deployment: dep}}, o)
	if err != nil || len(res.Failed) != 0 {
		t.Fatalf("materialize: %v %+v", err, res)
	}
	a, err := compose.New(ctx, compose.Options{
		Host: docker.Host(), DockerConfig: reg.DockerConfig, EnvDir: t.TempDir(), WaitTimeout: time.Minute,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	sts, err := a.Apply(ctx, res.Revision, nil)
	if err != nil || len(sts) != 1 || sts[0].Outcome != compose.OutcomeApplied {
		t.Fatalf("apply: %v %+v", err, sts)
	}
	if got := get(t, port); got != "from-margo" {
		t.Fatalf("the app serves %q, want the parameter's value", got)
	}

	// v2: the archive carries a traversal entry. It is refused, the
	// previous app is carried over and keeps running.
	bad := filepath.Join(t.TempDir(), "bad.tgz")
	writeTraversalArchive(t, bad, composeYAML)
	pushRawCompose(t, ctx, c, reg.Ref("acme/margo-web"), "2.0.0", bad)
	dep2, _ := spec.ParseDeployment("d", []byte(yaml("2.0.0")))
	o2 := o
	o2.Dir, o2.Previous, o2.PreviousDir, o2.ManifestVersion = filepath.Join(revs, "2"), res.Plan, res.Revision.Dir, 2
	res2, err := materialize.Materialize(ctx, []materialize.Deployment{{Digest: "sha256:02", Deployment: dep2}}, o2)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := res2.Failed[dep.ID]
	if !ok || f.Code != materialize.CodeRefused || !f.Carried || !strings.Contains(f.Err.Error(), "unsafe path") {
		t.Fatalf("failure = %+v", f)
	}
	prev := res.Revision
	sts, err = a.Apply(ctx, res2.Revision, &prev)
	if err != nil || sts[0].Outcome != compose.OutcomeApplied {
		t.Fatalf("apply carried revision: %v %+v", err, sts)
	}
	if got := get(t, port); got != "from-margo" {
		t.Fatalf("after the refused update the app serves %q", got)
	}
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

func get(t *testing.T, port string) string {
	t.Helper()
	var last error
	for range 40 {
		resp, err := http.Get("http://127.0.0.1:" + port + "/")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return strings.TrimSpace(string(b))
		}
		last = err
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("GET 127.0.0.1:%s: %v", port, last)
	return ""
}
