package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/source/margo/margotest"
)

// margoDevice is a Margo device run by the berth binary: a test WFM
// (margotest, a double of the WFM only), the registry of env for the
// components and images, the real Docker Engine, and an agent state
// folder. The agent's identity is an SVID minted by the WFM's CA.
type margoDevice struct {
	*env
	wfm      *margotest.WFM
	ids      margotest.Files
	docker   *testenv.DockerEngine
	port     int
	stateDir string
	cfgPath  string
	// caFile and dockerConfig reach every registry of the test.
	caFile, dockerConfig string
	// apply is the apply: block; registries a registries: block.
	apply, registries string
	image             string // the hello image, pinned by digest
}

const margoDeviceID = "press-07"

func newMargoDevice(t *testing.T, e *env) *margoDevice {
	t.Helper()
	d := &margoDevice{env: e, wfm: margotest.Start(t, margotest.Options{}), docker: testenv.Docker(t), port: freePort(t)}
	d.ids = d.wfm.ClientFiles(t, filepath.Join(t.TempDir(), "identity"), margoDeviceID)
	d.stateDir = filepath.Join(t.TempDir(), "state")
	d.caFile, d.dockerConfig = e.reg.CAFile, e.reg.DockerConfig
	d.docker.TrustRegistry(t, e.reg)
	ref := e.reg.Host() + "/acme/hello:v1"
	dg := testenv.PushImage(t, e.reg, ref, testenv.BuildHello(t), testenv.ImageOptions{})
	d.image = e.reg.Host() + "/acme/hello@" + dg
	d.apply = fmt.Sprintf("apply:\n  compose: {host: %s, waitTimeout: 60s}\n", d.docker.Host())
	t.Cleanup(func() { d.docker.RemoveProjectResources(t, "berth-margo-") })
	d.docker.RemoveProjectResources(t, "berth-margo-")
	return d
}

// writeConfig writes agent.yaml for the WFM at wfmURL.
func (d *margoDevice) writeConfig(wfmURL string) {
	d.t.Helper()
	cfg := fmt.Sprintf(`stateDir: %s
margo:
  wfm: %s
  deviceId: %s
  identity: {cert: %s, key: %s, trustBundle: %s}
  interval: 1h
  timeout: 20s
  verify: {keys: [%s]}
  credentials: {dockerConfig: %s}
  caFile: %s
  device: {vendor: Acme, modelNumber: E-100, serialNumber: SN-7, labels: {line: "3"}}
%s%s`, d.stateDir, wfmURL, margoDeviceID, d.ids.Cert, d.ids.Key, d.ids.Bundle, d.pub, d.dockerConfig, d.caFile, d.registries, d.apply)
	d.cfgPath = filepath.Join(filepath.Dir(d.stateDir), "agent.yaml")
	if err := os.WriteFile(d.cfgPath, []byte(cfg), 0o600); err != nil {
		d.t.Fatal(err)
	}
}

// once runs `berth agent --once` and returns its Margo result, its exit
// code and its log (warnings and errors: --once alone logs errors only).
func (d *margoDevice) once() (result, int, string) {
	d.t.Helper()
	out, errOut, code := testenv.Run(d.t, d.bin, nil, "agent", "--config", d.cfgPath, "--once", "--output", "json", "--log-level", "warn")
	var res []result
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res) != 1 || res[0].Source != "margo" {
		d.t.Fatalf("agent --once: exit %d, stdout %q\nstderr:\n%s", code, out, errOut)
	}
	return res[0], code, errOut
}

// expectOnce runs the agent once and checks its outcome and that its
// error says want ("" for none).
func (d *margoDevice) expectOnce(outcome, want string) result {
	d.t.Helper()
	r, code, log := d.once()
	if r.Outcome != outcome || (want == "") != (r.Error == "") || !strings.Contains(r.Error, want) || (code == 0) != (r.Error == "") {
		d.t.Fatalf("agent --once = %+v (exit %d), want %s with error %q\nlog:\n%s", r, code, outcome, want, log)
	}
	return r
}

// margoState is the agent's accepted Margo state.
type margoState struct {
	ManifestVersion uint64
	ETag            string
	Revision        string
	Deployments     map[string]struct {
		Digest                 string
		AdoptedManifestVersion uint64
	}
}

func (d *margoDevice) accepted() margoState {
	d.t.Helper()
	var st margoState
	b, err := os.ReadFile(filepath.Join(d.stateDir, "margo", "state.json"))
	if err != nil {
		d.t.Fatal(err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		d.t.Fatal(err)
	}
	return st
}

// current is the Margo revision in force.
func (d *margoDevice) current() string {
	d.t.Helper()
	target, err := os.Readlink(filepath.Join(d.stateDir, "sources", "margo", "current"))
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		d.t.Fatal(err)
	}
	return strings.Replace(filepath.Base(target), "sha256-", "sha256:", 1)
}

// states lists the states the WFM received for deployment id, in order.
func (d *margoDevice) states(id string) []string {
	var out []string
	for _, s := range d.wfm.Statuses() {
		if s.DeploymentID == id {
			out = append(out, s.State)
		}
	}
	return out
}

// lastStatus is the last status the WFM received for id.
func (d *margoDevice) lastStatus(id string) margotest.Status {
	d.t.Helper()
	sts := d.wfm.Statuses()
	for i := len(sts) - 1; i >= 0; i-- {
		if sts[i].DeploymentID == id {
			return sts[i]
		}
	}
	d.t.Fatalf("no status for %s", id)
	return margotest.Status{}
}

// serving is what the Compose app answers.
func (d *margoDevice) serving() string {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", d.port))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return strings.TrimSpace(string(b))
}

func (d *margoDevice) expectServing(msg string) {
	d.t.Helper()
	testenv.Eventually(d.t, 60*time.Second, func() bool { return d.serving() == msg }, "the Compose app never served %q (serves %q)", msg, d.serving())
}

// collector writes a Compose project whose web service runs the hello
// image, answering $GREETING on 127.0.0.1:$WEB_PORT; health checks every
// healthEvery.
func (d *margoDevice) collector(healthEvery string) string {
	d.t.Helper()
	dir := filepath.Join(d.t.TempDir(), "collector")
	mkWrite(d.t, filepath.Join(dir, "compose.yaml"), fmt.Sprintf(`services:
  web:
    image: %s
    ports: ["127.0.0.1:${WEB_PORT}:8080"]
    environment: ["MESSAGE=${GREETING:-unset}"]
    stop_grace_period: 2s
    healthcheck:
      test: ["CMD", "/hello", "healthcheck"]
      interval: %s
      timeout: 2s
      retries: 3
`, d.image, healthEvery))
	return dir
}

// composeDeployment is an ApplicationDeployment of the collector.
func (d *margoDevice) composeDeployment(id, repo, rev, greeting string) []byte {
	return []byte(fmt.Sprintf(`id: %s
metadata:
  name: line-monitor
  namespace: margo-apps
  deviceId: %s
spec:
  applicationId: line-monitor
  deploymentProfile:
    type: compose
    components:
      - name: collector
        properties: {repository: %s, revision: %s, wait: true, timeout: 1m30s}
    x-acme-extensions: {note: ignored by the device}
  parameters:
    greeting:
      value: %q
      targets: [{pointer: GREETING, components: [collector]}]
    port:
      value: "%d"
      targets: [{pointer: ENV.WEB_PORT, components: [collector]}]
`, id, margoDeviceID, repo, rev, greeting, d.port))
}

// signedRaw pushes a Compose Archive from the tar+gzip bytes layer as it
// is (as a careless or hostile publisher would, bypassing berth's checks)
// to repo:tag, and signs it with berth sign.
func (d *margoDevice) signedRaw(repo, tag string, layer []byte) {
	d.t.Helper()
	ctx := context.Background()
	r, err := remote.NewRepository(d.reg.Host() + "/" + repo)
	if err != nil {
		d.t.Fatal(err)
	}
	r.Client = &auth.Client{Client: d.reg.HTTPClient(), Credential: auth.StaticCredential(d.reg.Host(), auth.Credential{Username: d.reg.Username, Password: d.reg.Password})}
	push := func(mt string, b []byte) ocispec.Descriptor {
		desc := ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}
		if ok, _ := r.Exists(ctx, desc); !ok {
			if err := r.Push(ctx, desc, bytes.NewReader(b)); err != nil {
				d.t.Fatal(err)
			}
		}
		return desc
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/vnd.org.margo.component.compose+json",
		Config: push(ocispec.MediaTypeEmptyJSON, []byte("{}")), Layers: []ocispec.Descriptor{push("application/vnd.org.margo.component.compose.tar+gzip", layer)}}
	m.SchemaVersion = 2
	raw, _ := json.Marshal(m)
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(raw), Size: int64(len(raw))}
	if err := r.PushReference(ctx, desc, bytes.NewReader(raw), tag); err != nil {
		d.t.Fatal(err)
	}
	d.ok("sign", d.url(repo+"@"+desc.Digest.String()), "--sign-key", d.key)
}

// traversalArchive is a Compose Archive whose second entry climbs out of
// the extraction folder.
func traversalArchive(t *testing.T, composeYAML string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range []struct{ name, body string }{{"collector/compose.yaml", composeYAML}, {"collector/../../../tmp/berth-margo-escaped", "pwned"}} {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// margoStatus is the Margo source of `berth status --output json`.
type margoStatus struct {
	Name, URL, Ref string
	Applied        *struct {
		Digest, Version string
		Apps            []struct{ Name, Kind, Outcome, Message string }
	}
	Last *struct{ Outcome, Error string }
	// Detail is the Margo source's own account.
	Detail struct {
		ManifestVersion uint64
		QueuedStatuses  int
		Deployments     []struct {
			ID                     string
			AdoptedManifestVersion uint64
		}
	}
}

func (d *margoDevice) status() (margoStatus, string) {
	d.t.Helper()
	out, errOut, code := testenv.Run(d.t, d.bin, nil, "status", "--config", d.cfgPath, "--output", "json")
	var st struct{ Sources []margoStatus }
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Sources) != 1 || st.Sources[0].Name != "margo" {
		d.t.Fatalf("status: exit %d %q %s", code, out, errOut)
	}
	text, errOut, code := testenv.Run(d.t, d.bin, nil, "status", "--config", d.cfgPath)
	if code != 0 {
		d.t.Fatalf("status: exit %d %s", code, errOut)
	}
	return st.Sources[0], text
}

// queued counts the status posts queued on disk.
func (d *margoDevice) queued() int {
	files, _ := filepath.Glob(filepath.Join(d.stateDir, "margo", "outbox", "*.json"))
	return len(files)
}

// gets are the paths of the GET requests the WFM received since mark.
func (d *margoDevice) gets(mark int) []string {
	var out []string
	for _, r := range d.wfm.Requests()[mark:] {
		if r.Method == http.MethodGet {
			out = append(out, r.Path)
		}
	}
	return out
}

// mkWrite writes content to path, creating its folder.
func mkWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
