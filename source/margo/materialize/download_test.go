package materialize_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/berth-dev/berth/internal/errdef"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/margo/materialize"
	"github.com/berth-dev/berth/source/margo/pack"
	"github.com/berth-dev/berth/source/margo/spec"
	"github.com/berth-dev/berth/source/oci"
)

// linkEnv is Debian's docker-registry behind testenv's fault-injecting
// proxy: the components are pulled through the proxy, which can reset the
// next layer download mid-body (armed by the fetcher once the manifest was
// fetched and checked). It records the Range header of every blob GET and
// counts the blob bytes the client received.
type linkEnv struct {
	reg   *testenv.Registry
	proxy *testenv.Proxy
	push  *oci.Client // straight to the registry

	armed     atomic.Bool // reset the next blob GET mid-body
	blobBytes atomic.Int64
	mu        sync.Mutex
	ranges    []string        // Range of each blob GET, in order ("" for none)
	bodies    []*atomic.Int64 // bytes received of each blob GET, in order
}

func newLinkEnv(t *testing.T) *linkEnv {
	t.Helper()
	e := &linkEnv{reg: testenv.StartRegistry(t, testenv.RegistryOptions{})}
	e.proxy = testenv.StartProxy(t, e.reg)
	var err error
	if e.push, err = oci.NewClient(oci.Options{CAFile: e.reg.CAFile, DockerConfig: e.reg.DockerConfig}); err != nil {
		t.Fatal(err)
	}
	e.proxy.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			e.mu.Lock()
			e.ranges = append(e.ranges, r.Header.Get("Range"))
			e.mu.Unlock()
			// This request keeps the fault it arrived with; the next ones
			// (the resume) go through.
			if e.armed.CompareAndSwap(true, false) {
				e.proxy.SetFault(testenv.FaultNone)
			}
		}
		return false
	})
	return e
}

// client is a new registry client to the proxy (a new one per agent
// start), counting the blob bytes it receives.
func (e *linkEnv) client(t *testing.T) *oci.Client {
	t.Helper()
	c, err := oci.NewClient(oci.Options{
		CAFile: e.reg.CAFile, DockerConfig: filepath.Join(e.reg.DockerConfigFor(t, e.proxy.Host()), "config.json"),
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			return roundTripper(func(r *http.Request) (*http.Response, error) {
				resp, err := rt.RoundTrip(r)
				if err == nil && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
					one := new(atomic.Int64)
					e.mu.Lock()
					e.bodies = append(e.bodies, one)
					e.mu.Unlock()
					resp.Body = &countingBody{ReadCloser: resp.Body, n: []*atomic.Int64{&e.blobBytes, one}}
				}
				return resp, err
			})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type countingBody struct {
	io.ReadCloser
	n []*atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	for _, c := range b.n {
		c.Add(int64(n))
	}
	return n, err
}

// lastBody is the bytes received by the last blob GET.
func (e *linkEnv) lastBody() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.bodies[len(e.bodies)-1].Load()
}

// blobGets returns the Range headers of the blob GETs since mark.
func (e *linkEnv) blobGets(mark int) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.ranges[mark:]...)
}

func (e *linkEnv) mark() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.ranges)
}

// resetting is a Fetcher that, when e is armed, makes the proxy reset the
// next request (the layer GET) once the component's manifest was fetched.
type resetting struct {
	materialize.Fetcher
	e *linkEnv
}

func (f resetting) Open(ctx context.Context, ref oci.Reference) (*deliver.Verified, error) {
	v, err := f.Fetcher.Open(ctx, ref)
	if err == nil && f.e.armed.Load() {
		f.e.proxy.SetFault(testenv.FaultReset)
	}
	return v, err
}

// component is a pushed component: its deployment and layer size.
type component struct {
	yaml  string
	layer int64
}

// pushCompose pushes a Compose Archive with an incompressible file of n
// bytes.
func (e *linkEnv) pushCompose(t *testing.T, n int) component {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte("services: {}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "big.txt"), []byte(noise(t, n)), 0o644)
	ref, _ := oci.ParseReference("oci://" + e.reg.Ref("acme/web:1.0.0"))
	if _, err := pack.PushComposeArchive(context.Background(), e.push, pack.ComposeOptions{Dir: dir, Ref: ref}); err != nil {
		t.Fatal(err)
	}
	return component{yaml: deploymentYAML("compose", e.proxy.Ref("acme/web"), "1.0.0"), layer: e.layerSize(t, "acme/web:1.0.0")}
}

// pushChart pushes an application package whose Helm chart holds an
// incompressible file of n bytes.
func (e *linkEnv) pushChart(t *testing.T, n int) component {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "helm/monitor/files"), 0o755)
	os.WriteFile(filepath.Join(dir, "helm/monitor/Chart.yaml"), []byte("apiVersion: v2\nname: monitor\nversion: 0.3.0\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "helm/monitor/files/big.txt"), []byte(noise(t, n)), 0o644)
	os.WriteFile(filepath.Join(dir, "margo.yaml"), []byte(`id: acme
metadata: {name: m, version: 1.0.0}
deploymentProfiles:
  - type: helm
    components: [{name: monitor, properties: {repository: oci://`+e.reg.Ref("charts/monitor")+`, revision: 0.3.0}}]
`), 0o644)
	ref, _ := oci.ParseReference("oci://" + e.reg.Ref("apps/m"))
	if _, err := pack.PushPackage(context.Background(), e.push, pack.PackageOptions{Dir: dir, Ref: ref}); err != nil {
		t.Fatal(err)
	}
	return component{yaml: deploymentYAML("helm", e.proxy.Ref("charts/monitor"), "0.3.0"), layer: e.layerSize(t, "charts/monitor:0.3.0")}
}

func (e *linkEnv) layerSize(t *testing.T, repoTag string) int64 {
	t.Helper()
	ref, _ := oci.ParseReference("oci://" + e.reg.Ref(repoTag))
	desc, err := e.push.Resolve(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	_, m, err := e.push.Manifest(context.Background(), ref.WithDigest(desc.Digest.String()))
	if err != nil || len(m.Layers) != 1 {
		t.Fatalf("manifest of %s: %v", repoTag, err)
	}
	return m.Layers[0].Size
}

const depID = "2b6c1f1e-2a44-4c7e-9d51-7e3f5a0c9b21"

func deploymentYAML(typ, repo, rev string) string {
	return fmt.Sprintf(`id: %s
metadata: {name: app, namespace: ot}
spec:
  applicationId: acme
  deploymentProfile:
    type: %s
    components:
      - name: c
        properties: {repository: oci://%s, revision: %s}
`, depID, typ, repo, rev)
}

// noise is n bytes of hex from random bytes: about n/2 once gzipped.
func noise(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n/2)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}

// run materializes the deployment of c into a new folder, through a new
// client (an agent start), with d.
func (e *linkEnv) run(t *testing.T, c component, d materialize.Download) *materialize.Result {
	t.Helper()
	dep, err := spec.ParseDeployment("d.yaml", []byte(c.yaml))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := resetting{Fetcher: materialize.Registry{Remote: &deliver.Remote{Client: e.client(t)}, Insecure: true}, e: e}
	res, err := materialize.Materialize(ctx, []materialize.Deployment{{Digest: "sha256:aa", Deployment: dep}}, materialize.Options{
		Dir: filepath.Join(t.TempDir(), "rev"), Source: "margo", Types: []string{"compose", "helm"}, Fetcher: f, Download: d,
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// rangeStart is the offset of a "bytes=N-" or "bytes=N-M" Range; -1 for
// none.
func rangeStart(h string) int64 {
	s, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return -1
	}
	s, _, _ = strings.Cut(s, "-")
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// TestDownloadResumesAfterReset: a Compose Archive's or a Helm chart's
// layer download reset mid-body (TCP RST from the proxy, half the body
// sent) resumes with a Range request from where it stopped, within the
// same materialization: the component is materialized, and the bytes
// fetched in all are the layer's, not twice as many (issue 11).
func TestDownloadResumesAfterReset(t *testing.T) {
	e := newLinkEnv(t)
	for _, tc := range []struct {
		name string
		push func(*testing.T, int) component
	}{{"compose", e.pushCompose}, {"helm", e.pushChart}} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.push(t, 1<<20)
			mark, before := e.mark(), e.blobBytes.Load()
			e.armed.Store(true)
			res := e.run(t, c, materialize.Download{PartialDir: t.TempDir(), Resumes: 2})
			if f, bad := res.Failed[depID]; bad {
				t.Fatalf("a reset download was not resumed: %+v", f)
			}
			gets := e.blobGets(mark)
			if len(gets) != 2 || gets[0] != "" || rangeStart(gets[1]) <= 0 {
				t.Fatalf("blob GETs (their Range) = %q, want a full GET then one resumed with bytes=N-", gets)
			}
			if got := e.blobBytes.Load() - before; got >= 2*c.layer || got < c.layer {
				t.Errorf("fetched %d bytes in all for a %d-byte layer cut once, want at least 1x and less than 2x", got, c.layer)
			}
			if got, want := e.lastBody(), c.layer-rangeStart(gets[1]); got != want {
				t.Errorf("the resumed request fetched %d bytes, want the %d missing", got, want)
			}
			if len(res.Revision.State.Apps) != 1 || res.Plan.Deployments[0].Components[0].Path == "" {
				t.Fatalf("revision = %+v", res.Revision.State)
			}
			if _, err := os.Stat(filepath.Join(res.Revision.Dir, filepath.FromSlash(res.Plan.Deployments[0].Components[0].Path))); err != nil {
				t.Errorf("component folder: %v", err)
			}
		})
	}
}

// TestDownloadResumesAfterRestart: a download cut off with no resume left
// in the run (a restart, or Resumes spent) fails as a transport failure
// (not refused) and leaves the partial blob and its SHA-256 state in the
// partial folder; the next run, on a new client as after an agent
// restart, resumes from the kept partial with one Range request and
// fetches only the rest; the partial folder is empty afterwards.
func TestDownloadResumesAfterRestart(t *testing.T) {
	e := newLinkEnv(t)
	c := e.pushCompose(t, 1<<20)
	partials := t.TempDir()
	e.armed.Store(true)
	res := e.run(t, c, materialize.Download{PartialDir: partials})
	f, bad := res.Failed[depID]
	if !bad || f.Code != materialize.CodeFetch || errors.Is(f.Err, errdef.ErrRefused) {
		t.Fatalf("cut download: %+v, want a fetch failure, not a refusal", f)
	}
	parts, _ := os.ReadDir(partials)
	if len(parts) != 2 {
		t.Fatalf("partial folder holds %v, want the blob received and its state", parts)
	}
	var kept int64
	for _, p := range parts {
		if strings.HasSuffix(p.Name(), ".part") {
			fi, _ := p.Info()
			kept = fi.Size()
		}
	}

	mark, before := e.mark(), e.blobBytes.Load()
	res = e.run(t, c, materialize.Download{PartialDir: partials})
	if f, bad := res.Failed[depID]; bad {
		t.Fatalf("after the restart: %+v", f)
	}
	gets := e.blobGets(mark)
	if len(gets) != 1 || rangeStart(gets[0]) <= 0 || rangeStart(gets[0]) > kept {
		t.Fatalf("blob GETs after the restart = %q, want one Range from the kept %d bytes", gets, kept)
	}
	if got, want := e.blobBytes.Load()-before, c.layer-rangeStart(gets[0]); got != want {
		t.Errorf("the resumed download fetched %d bytes, want the %d missing", got, want)
	}
	if parts, _ := os.ReadDir(partials); len(parts) != 0 {
		t.Errorf("partial folder holds %v after the blob verified", parts)
	}
}

// TestDownloadRateLimited: the components' downloads take their bytes
// from the limiter they are given: after a download the limiter lacks
// exactly the layer's bytes, less what its rate refilled meanwhile (an
// accounting check, not a timing one).
func TestDownloadRateLimited(t *testing.T) {
	e := newLinkEnv(t)
	for _, tc := range []struct {
		name string
		push func(*testing.T, int) component
	}{{"compose", e.pushCompose}, {"helm", e.pushChart}} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.push(t, 256<<10)
			const bps, burst = 1 << 10, 1 << 20
			lim := rate.NewLimiter(bps, burst)
			start := time.Now()
			res := e.run(t, c, materialize.Download{Limiter: lim})
			if f, bad := res.Failed[depID]; bad {
				t.Fatal(f)
			}
			refilled := bps * time.Since(start).Seconds()
			spent := burst - lim.TokensAt(time.Now())
			if spent < float64(c.layer)-refilled-1 || spent > float64(c.layer) {
				t.Errorf("the limiter lost %.0f tokens for a %d-byte layer (refill %.0f): the download did not go through it", spent, c.layer, refilled)
			}
		})
	}
}

// TestDownloadMinFree: a download that would leave less free space than
// MinFree is not started: no blob is requested, the deployment fails with
// CodeNoSpace, a transport-class failure (not a refusal) whose message
// names minFreeSpace and what to do.
func TestDownloadMinFree(t *testing.T) {
	e := newLinkEnv(t)
	for _, tc := range []struct {
		name string
		push func(*testing.T, int) component
	}{{"compose", e.pushCompose}, {"helm", e.pushChart}} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.push(t, 1<<10)
			mark := e.mark()
			res := e.run(t, c, materialize.Download{PartialDir: t.TempDir(), MinFree: deliver.MinFree{Bytes: 1 << 60}})
			f, bad := res.Failed[depID]
			if !bad || f.Code != materialize.CodeNoSpace || !errors.Is(f.Err, deliver.ErrNoSpace) || errors.Is(f.Err, errdef.ErrRefused) {
				t.Fatalf("failure = %+v, want %s", f, materialize.CodeNoSpace)
			}
			if msg := f.Err.Error(); !strings.Contains(msg, "minFreeSpace") || !strings.Contains(msg, "free some space") {
				t.Errorf("message %q does not say which setting and what to do", msg)
			}
			if gets := e.blobGets(mark); len(gets) != 0 {
				t.Errorf("%d blob GETs despite the pre-flight", len(gets))
			}
			if len(res.Revision.State.Apps) != 0 {
				t.Errorf("apps = %+v", res.Revision.State.Apps)
			}
			// With room to spare, the same download goes ahead.
			res = e.run(t, c, materialize.Download{PartialDir: t.TempDir(), MinFree: deliver.MinFree{Bytes: 1}})
			if f, bad := res.Failed[depID]; bad {
				t.Fatal(f)
			}
		})
	}
}
