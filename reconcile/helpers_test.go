package reconcile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/config"
	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/state"
)

// signing key, generated once per test binary: cosign's encrypted key
// format is slow to create and to decrypt.
var (
	keyOnce sync.Once
	keyPub  []byte
	keySV   signature.SignerVerifier
	keyErr  error
)

func signingKey(t *testing.T) ([]byte, signature.SignerVerifier) {
	t.Helper()
	keyOnce.Do(func() {
		pass := []byte("test-password")
		var priv []byte
		priv, keyPub, keyErr = cosign.GenerateKeyPair(pass)
		if keyErr != nil {
			return
		}
		f, err := os.CreateTemp("", "berth-reconcile-test-*.key")
		if err != nil {
			keyErr = err
			return
		}
		defer os.Remove(f.Name())
		if _, err := f.Write(priv); err != nil {
			keyErr = err
			return
		}
		f.Close()
		keySV, keyErr = cosign.LoadPrivateKey(f.Name(), func() ([]byte, error) { return pass, nil })
	})
	if keyErr != nil {
		t.Fatalf("signing key: %v", keyErr)
	}
	return keyPub, keySV
}

// env is an in-process registry, a publishing client and a folder for the
// agent's files.
type env struct {
	t      *testing.T
	host   string // 127.0.0.1:PORT
	dir    string
	pub    string // public key file
	client *oci.Client
	srv    *httptest.Server

	requests atomic.Int64 // every request the registry received
	heads    atomic.Int64 // HEAD requests of manifests
	mu       sync.Mutex
	seen     []string // "METHOD PATH" of the requests, for failure messages
	seq      atomic.Int64
	// intercept, when set, sees every request first and answers it itself
	// when it returns true.
	intercept atomic.Pointer[func(http.ResponseWriter, *http.Request) bool]
	handler   http.Handler // the registry itself
}

// srvHandler is the registry without the counting and interception.
func (e *env) srvHandler() http.Handler { return e.handler }

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir()}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	e.handler = reg
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.requests.Add(1)
		if r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/manifests/") {
			e.heads.Add(1)
		}
		e.mu.Lock()
		e.seen = append(e.seen, r.Method+" "+r.URL.Path)
		e.mu.Unlock()
		if f := e.intercept.Load(); f != nil && (*f)(w, r) {
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(e.srv.Close)
	e.host = strings.TrimPrefix(e.srv.URL, "http://")
	pub, _ := signingKey(t)
	e.pub = filepath.Join(e.dir, "cosign.pub")
	if err := os.WriteFile(e.pub, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := oci.NewClient(oci.Options{Insecure: true, DockerConfig: filepath.Join(e.dir, "docker-config.json")})
	if err != nil {
		t.Fatal(err)
	}
	e.client = c
	return e
}

// requestsSince returns the requests after the n-th.
func (e *env) requestsSince(n int) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.seen[n:]...)
}

func (e *env) requestCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.seen)
}

// artifact describes one revision to publish.
type artifact struct {
	files    map[string]string // path -> content; a unique file is added
	created  time.Time         // org.opencontainers.image.created; zero: none
	unsigned bool
	// annotations are more manifest annotations.
	annotations map[string]string
}

// berthYAML is a desired state with one Compose app.
const berthYAML = `apiVersion: berth.dev/v1
kind: DeviceState
apps:
  - name: web
    compose: {path: apps/web}
`

// withState returns files holding berthYAML and its Compose project.
func withState(extra map[string]string) map[string]string {
	m := map[string]string{
		"berth.yaml":            berthYAML,
		"apps/web/compose.yaml": "services:\n  web:\n    image: nginx\n",
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// push packs a.files with archive.Build, pushes the artifact with
// oci.Client.Push as repo:tag, signs it with cosign.Sign unless a.unsigned,
// and returns its digest. Every push has distinct content (a serial file).
func (e *env) push(repo, tag string, a artifact) string {
	e.t.Helper()
	ctx := context.Background()
	src := filepath.Join(e.dir, fmt.Sprintf("src-%d", e.seq.Add(1)))
	files := map[string]string{"serial.txt": fmt.Sprint(e.seq.Load())}
	for k, v := range a.files {
		files[k] = v
	}
	for name, content := range files {
		p := filepath.Join(src, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			e.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			e.t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	built, err := archive.Build(ctx, src, &buf, archive.BuildOptions{})
	if err != nil {
		e.t.Fatalf("archive.Build: %v", err)
	}
	layer := buf.Bytes()
	ann := map[string]string{ocispec.AnnotationRevision: fmt.Sprintf("main@sha1:%040d", e.seq.Load())}
	if !a.created.IsZero() {
		ann[ocispec.AnnotationCreated] = a.created.UTC().Format(time.RFC3339)
	}
	maps.Copy(ann, a.annotations)
	ref := oci.Reference{Registry: e.host, Repository: repo, Tag: tag}
	desc, err := e.client.Push(ctx, ref, oci.Artifact{
		Layer: oci.Blob{
			Digest: digest.Digest(built.Digest),
			Size:   int64(len(layer)),
			Open:   func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer)), nil },
		},
		Annotations: ann,
	})
	if err != nil {
		e.t.Fatalf("push %s: %v", ref, err)
	}
	d := desc.Digest.String()
	if !a.unsigned {
		e.sign(repo, d)
	}
	return d
}

// sign signs repo@d with the test key.
func (e *env) sign(repo, d string) {
	e.t.Helper()
	_, sv := signingKey(e.t)
	nd, err := e.client.Name(oci.Reference{Registry: e.host, Repository: repo, Digest: d})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx := context.Background()
	if err := cosign.Sign(ctx, nd, sv, cosign.FormatBundle, e.client.RemoteOptions(ctx)...); err != nil {
		e.t.Fatalf("sign %s: %v", nd, err)
	}
}

// deleteTag removes a tag from the registry.
func (e *env) deleteTag(repo, tag string) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, fmt.Sprintf("%s/v2/%s/manifests/%s", e.srv.URL, repo, tag), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		e.t.Fatalf("delete %s:%s: %s", repo, tag, resp.Status)
	}
}

// src is one source of an agent configuration.
type src struct {
	name  string
	repo  string
	ref   string // YAML flow mapping; default {tag: stable}
	extra string // more YAML lines of the source, indented by 4
}

// config writes an agent configuration and parses it with config.Parse.
// global holds top-level YAML lines.
func (e *env) config(global string, sources ...src) *config.Config {
	e.t.Helper()
	return e.configIn(e.dir, global, sources...)
}

// configIn is config for an agent whose files are in dir (one of several
// devices of a fleet).
func (e *env) configIn(dir, global string, sources ...src) *config.Config {
	e.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "stateDir: %s\nsocket: %s\n", filepath.Join(dir, "state"), filepath.Join(dir, "s.sock"))
	b.WriteString(global)
	if global != "" && !strings.HasSuffix(global, "\n") {
		b.WriteString("\n")
	}
	b.WriteString("sources:\n")
	for _, s := range sources {
		ref := s.ref
		if ref == "" {
			ref = "{tag: stable}"
		}
		fmt.Fprintf(&b, "  - name: %s\n    url: oci://%s/%s\n    ref: %s\n    insecure: true\n    jitter: 0\n",
			s.name, e.host, s.repo, ref)
		if !strings.Contains(s.extra, "timeout:") {
			b.WriteString("    timeout: 20s\n")
		}
		if !strings.Contains(s.extra, "interval:") {
			b.WriteString("    interval: 1m\n")
		}
		fmt.Fprintf(&b, "    credentials: {dockerConfig: %s}\n", filepath.Join(e.dir, "docker-config.json"))
		if !strings.Contains(s.extra, "insecureSkipVerify") {
			fmt.Fprintf(&b, "    verify: {keys: [%s]}\n", e.pub)
		}
		if s.extra != "" {
			b.WriteString(s.extra)
			if !strings.HasSuffix(s.extra, "\n") {
				b.WriteString("\n")
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		e.t.Fatal(err)
	}
	path := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		e.t.Fatal(err)
	}
	cfg, err := config.Parse(path, []byte(b.String()))
	if err != nil {
		e.t.Fatalf("config.Parse:\n%s\n%v", b.String(), err)
	}
	return cfg
}

// newAgent builds an agent with quiet logs.
func newAgent(t *testing.T, cfg *config.Config, appliers ...Applier) *Agent {
	t.Helper()
	return newAgentWith(t, cfg, nil, appliers...)
}

// newAgentWith builds an agent with quiet logs whose clock is clk (nil:
// the real one).
func newAgentWith(t *testing.T, cfg *config.Config, clk *fakeClock, appliers ...Applier) *Agent {
	t.Helper()
	o := Options{Appliers: appliers, Log: quietLog(t), Version: "test"}
	if clk != nil {
		o.Now = clk.Now
	}
	a, err := New(cfg, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

// fakeClock is the agent's clock in tests: it moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// quietLog logs to the test output only when it fails (with -v).
func quietLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// call is one Apply call as the applier saw it.
type call struct {
	rev     state.Revision
	prev    *state.Revision
	serial  string // serial.txt of rev.Dir at the call
	current string // what the store's current pointed at during the call
}

// recorder is an Applier that records its calls and fails on demand.
type recorder struct {
	kind  string
	store func() *store.Store

	mu    sync.Mutex
	calls []call
	fail  map[string]error // by digest
	all   error            // fails every call when set
}

func newRecorder() *recorder { return &recorder{kind: "test", fail: map[string]error{}} }

func (r *recorder) Kind() string { return r.kind }

func (r *recorder) Apply(_ context.Context, rev state.Revision, prev *state.Revision) ([]state.AppStatus, error) {
	c := call{rev: rev}
	if prev != nil {
		p := *prev
		c.prev = &p
	}
	if b, err := os.ReadFile(filepath.Join(rev.Dir, "serial.txt")); err == nil {
		c.serial = string(b)
	} else if !errors.Is(err, fs.ErrNotExist) {
		c.serial = "error: " + err.Error()
	}
	if r.store != nil {
		c.current, _ = r.store().Current(rev.Source)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
	err := r.all
	if e, ok := r.fail[rev.Digest]; ok {
		err = e
	}
	out := "applied"
	if err != nil {
		out = "failed"
	}
	return []state.AppStatus{{Name: "web", Kind: r.kind, Outcome: out}}, err
}

func (r *recorder) setFail(d string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.fail, d)
	} else {
		r.fail[d] = err
	}
}

func (r *recorder) setFailAll(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = err
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

func (r *recorder) last(t *testing.T) call {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.calls) == 0 {
		t.Fatal("Apply was never called")
	}
	return r.calls[len(r.calls)-1]
}

// attach lets the recorder see the agent's store.
func (r *recorder) attach(a *Agent) { r.store = func() *store.Store { return a.store } }

type apiResult = api.ReconcileResult

// one checks that RunOnce or ReconcileNow gave one result with outcome
// and digest (digest "" is not checked), and returns it.
func one(t *testing.T, res []apiResult, outcome, digest string) apiResult {
	t.Helper()
	if len(res) != 1 {
		t.Fatalf("%d results, want 1: %+v", len(res), res)
	}
	r := res[0]
	if r.Outcome != outcome || (digest != "" && r.Digest != digest) {
		t.Fatalf("result = %+v, want outcome %s digest %s", r, outcome, short(digest))
	}
	if (outcome == "applied" || outcome == "unchanged" || outcome == "rolled-back" || outcome == "waiting" || outcome == "aborted") != (r.Error == "") {
		t.Fatalf("result = %+v: error does not match outcome %s", r, outcome)
	}
	return r
}

// sourceState reads the source's state back from state.json.
func sourceState(t *testing.T, cfg *config.Config, name string) *store.SourceState {
	t.Helper()
	st, err := store.ReadState(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	ss, ok := st.Sources[name]
	if !ok {
		t.Fatalf("state.json has no source %s", name)
	}
	return ss
}

func current(t *testing.T, a *Agent, name string) string {
	t.Helper()
	d, err := a.store.Current(name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

// poll is one reconcile of the agent's loop: not forced, and nothing for a
// suspended source.
func poll(a *Agent, name string) []apiResult {
	if a.suspended(name) {
		return []apiResult{{Source: name, Outcome: "suspended"}}
	}
	return []apiResult{a.reconcile(context.Background(), name, a.sources[name], request{})}
}
