package testenv

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func getStatus(t *testing.T, c *http.Client, url, user, pass string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func pushRandomImage(t *testing.T, r *Registry, repoTag string, opts ...remote.Option) (name.Reference, v1.Hash) {
	t.Helper()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(r.Ref(repoTag))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, opts...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return ref, digest
}

func isConnRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

func TestRegistryTLSAuth(t *testing.T) {
	r := StartRegistry(t, RegistryOptions{})
	if !strings.HasPrefix(r.Host(), "127.0.0.1:") || r.Port() == 5000 {
		t.Fatalf("Host = %s", r.Host())
	}
	if r.URL() != "https://"+r.Host() || r.CAFile == "" || r.Username == "" || r.Password == "" {
		t.Fatalf("registry = %+v", r)
	}
	client := r.HTTPClient()

	// TLS: the CA is needed, and trusted through HTTPClient.
	if _, err := http.Get(r.URL() + "/v2/"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("GET without the CA: err = %v, want a certificate error", err)
	}
	if got := getStatus(t, client, r.URL()+"/v2/", "", ""); got != http.StatusUnauthorized {
		t.Errorf("GET /v2/ without credentials = %d, want 401", got)
	}
	if got := getStatus(t, client, r.URL()+"/v2/", r.Username, "wrong"); got != http.StatusUnauthorized {
		t.Errorf("GET /v2/ with a wrong password = %d, want 401", got)
	}
	if got := getStatus(t, client, r.URL()+"/v2/", r.Username, r.Password); got != http.StatusOK {
		t.Errorf("GET /v2/ with credentials = %d, want 200", got)
	}

	// The Docker config holds the credentials for Host.
	data, err := os.ReadFile(r.DockerConfig)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Auths map[string]struct{ Auth string } `json:"auths"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("%s: %v", r.DockerConfig, err)
	}
	if _, ok := cfg.Auths[r.Host()]; !ok || len(cfg.Auths) != 1 {
		t.Errorf("config.json auths = %v, want one entry for %s", cfg.Auths, r.Host())
	}
	t.Setenv("DOCKER_CONFIG", r.DockerConfigDir)
	reg, err := name.NewRegistry(r.Host())
	if err != nil {
		t.Fatal(err)
	}
	auth, err := authn.DefaultKeychain.Resolve(reg)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := auth.Authorization()
	if err != nil {
		t.Fatal(err)
	}
	if ac.Username != r.Username || ac.Password != r.Password {
		t.Errorf("keychain from DockerConfigDir gives %q/%q", ac.Username, ac.Password)
	}

	// Push with the keychain; pull by digest.
	opts := []remote.Option{remote.WithTransport(client.Transport), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
	ref, digest := pushRandomImage(t, r, "testenv/app:v1", opts...)
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != digest {
		t.Errorf("tag resolves to %s, pushed %s", desc.Digest, digest)
	}
	byDigest := ref.Context().Digest(digest.String())
	if _, err := remote.Image(byDigest, remote.WithTransport(client.Transport)); err == nil {
		t.Error("anonymous pull succeeded on an auth registry")
	}

	// The access log counts requests.
	Eventually(t, 5*time.Second, func() bool {
		return r.RequestCount(`"PUT /v2/testenv/app/manifests/v1 `) == 1
	}, "one manifest PUT in the log; have %d", r.RequestCount(`"PUT /v2/testenv/app/manifests/v1 `))
	if n := r.RequestCount(`" 401 `); n < 3 {
		t.Errorf("401s in the log = %d, want at least 3", n)
	}
	if n, all := r.RequestCount(""), len(r.Requests()); n != all || n < 8 {
		t.Errorf("RequestCount(\"\") = %d, len(Requests) = %d", n, all)
	}
	var sawPut bool
	for _, req := range r.Requests() {
		if req.Method == http.MethodPut && req.URI == "/v2/testenv/app/manifests/v1" {
			sawPut = true
			if req.Status != http.StatusCreated || req.RemoteHost != "127.0.0.1" || !strings.HasPrefix(req.Proto, "HTTP/") || req.Time.IsZero() {
				t.Errorf("manifest PUT parsed as %+v", req)
			}
		}
	}
	if !sawPut {
		t.Error("Requests has no manifest PUT")
	}

	// Down: new connections are refused (kept-alive ones see EOF, so use
	// new clients).
	r.Stop()
	r.Stop() // no-op
	client = r.HTTPClient()
	opts = []remote.Option{remote.WithTransport(client.Transport), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
	_, err = client.Get(r.URL() + "/v2/")
	if !isConnRefused(err) {
		t.Fatalf("GET after Stop: err = %v, want connection refused", err)
	}
	if _, err := remote.Get(byDigest, opts...); err == nil || !isConnRefused(err) {
		t.Errorf("pull after Stop: err = %v, want connection refused", err)
	}

	// Back: same port, same credentials, the data is still there.
	before := r.RequestCount("")
	r.Start()
	img, err := remote.Image(byDigest, opts...)
	if err != nil {
		t.Fatalf("pull by digest after restart: %v", err)
	}
	if got, _ := img.Digest(); got != digest {
		t.Errorf("pulled %s, want %s", got, digest)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
	}
	Eventually(t, 5*time.Second, func() bool { return r.RequestCount("") > before }, "requests after restart are logged")

	// Deletion is enabled.
	req, _ := http.NewRequest(http.MethodDelete, r.URL()+"/v2/testenv/app/manifests/"+digest.String(), nil)
	req.SetBasicAuth(r.Username, r.Password)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("DELETE manifest = %s, want 202", resp.Status)
	}
}

func TestRegistryPlain(t *testing.T) {
	r := StartRegistry(t, RegistryOptions{Plain: true, NoAuth: true})
	if r.URL() != "http://"+r.Host() || r.CAFile != "" || r.Username != "" || r.Password != "" || r.CertPool() != nil {
		t.Fatalf("registry = %+v", r)
	}
	if got := getStatus(t, http.DefaultClient, r.URL()+"/v2/", "", ""); got != http.StatusOK {
		t.Errorf("GET /v2/ = %d, want 200", got)
	}
	data, err := os.ReadFile(r.DockerConfig)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(data)) != `{
  "auths": {}
}` {
		t.Errorf("config.json = %s", data)
	}
	ref, digest := pushRandomImage(t, r, "plain/app:latest", remote.WithTransport(r.HTTPClient().Transport))
	r.Stop()
	r.Start()
	desc, err := remote.Head(ref)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != digest {
		t.Errorf("after restart the tag resolves to %s, want %s", desc.Digest, digest)
	}
}

func TestRegistryPlainWithAuth(t *testing.T) {
	r := StartRegistry(t, RegistryOptions{Plain: true})
	if got := getStatus(t, http.DefaultClient, r.URL()+"/v2/", "", ""); got != http.StatusUnauthorized {
		t.Errorf("GET /v2/ = %d, want 401", got)
	}
	if got := getStatus(t, http.DefaultClient, r.URL()+"/v2/", r.Username, r.Password); got != http.StatusOK {
		t.Errorf("GET /v2/ with credentials = %d, want 200", got)
	}
}

func TestRegistryTLSNoAuth(t *testing.T) {
	r := StartRegistry(t, RegistryOptions{NoAuth: true})
	if got := getStatus(t, r.HTTPClient(), r.URL()+"/v2/", "", ""); got != http.StatusOK {
		t.Errorf("GET /v2/ = %d, want 200", got)
	}
	// The server certificate is valid for localhost too.
	url := strings.Replace(r.URL(), "127.0.0.1", "localhost", 1) + "/v2/"
	if got := getStatus(t, r.HTTPClient(), url, "", ""); got != http.StatusOK {
		t.Errorf("GET %s = %d, want 200", url, got)
	}
}

func TestRegistriesRunSideBySide(t *testing.T) {
	t.Parallel()
	a := StartRegistry(t, RegistryOptions{NoAuth: true, Plain: true})
	b := StartRegistry(t, RegistryOptions{NoAuth: true, Plain: true})
	if a.Host() == b.Host() {
		t.Fatalf("both on %s", a.Host())
	}
	a.Stop()
	if got := getStatus(t, http.DefaultClient, b.URL()+"/v2/", "", ""); got != http.StatusOK {
		t.Errorf("GET b /v2/ = %d", got)
	}
}

func TestParseAccessLogLine(t *testing.T) {
	line := `127.0.0.1 - - [22/Nov/2026:01:42:02 +0000] "GET /v2/foo/manifests/latest?x=1 HTTP/1.1" 404 96 "" "berth/1.0 (linux) \"quoted\""`
	req, ok := parseAccessLogLine(line)
	if !ok {
		t.Fatal("not parsed")
	}
	want := Request{
		RemoteHost: "127.0.0.1", User: "-", Time: time.Date(2026, 11, 22, 1, 42, 2, 0, time.UTC),
		Method: "GET", URI: "/v2/foo/manifests/latest?x=1", Proto: "HTTP/1.1", Status: 404, Size: 96,
		UserAgent: `berth/1.0 (linux) \"quoted\"`, Line: line,
	}
	if !req.Time.Equal(want.Time) {
		t.Errorf("time = %v", req.Time)
	}
	req.Time = want.Time
	if req != want {
		t.Errorf("parsed\n%+v\nwant\n%+v", req, want)
	}
	for _, notRequest := range []string{
		`time="2026-11-22T01:42:02.858155255Z" level=info msg="response completed" http.request.method=GET http.request.uri=/v2/`,
		`# testenv: start 1 of docker-registry on 127.0.0.1:1234 at 2026-11-22T01:42:02Z`,
		``,
	} {
		if _, ok := parseAccessLogLine(notRequest); ok {
			t.Errorf("parsed as a request: %q", notRequest)
		}
	}
}

func TestStartRegistryWithoutBinaryFails(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	old := registryFallback
	registryFallback = "/nonexistent/docker-registry"
	defer func() { registryFallback = old }()
	ft := &fatalRecorder{TB: t}
	runInGoroutine(func() { StartRegistry(ft, RegistryOptions{}) })
	want := "docker-registry not found: run `make test` (installs it as root) or `sudo apt-get install -y docker-registry`"
	if ft.msg != want {
		t.Errorf("fatal message = %q, want %q", ft.msg, want)
	}
}

func TestFindRegistryBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if got := findRegistryBinary(); got != RegistryBinary {
		t.Errorf("without PATH: %q, want the fallback %s", got, RegistryBinary)
	}
}

func TestRegistryRestartWaitsForPort(t *testing.T) {
	r := StartRegistry(t, RegistryOptions{Plain: true, NoAuth: true})
	r.Stop()
	l, err := net.Listen("tcp", r.Host())
	if err != nil {
		t.Fatalf("take the port: %v", err)
	}
	go func() {
		time.Sleep(700 * time.Millisecond)
		l.Close()
	}()
	r.Start()
	if got := getStatus(t, http.DefaultClient, r.URL()+"/v2/", "", ""); got != http.StatusOK {
		t.Errorf("GET /v2/ = %d", got)
	}
	if n := strings.Count(readFile(t, r.LogFile), "address already in use"); n == 0 {
		t.Error("the log shows no failed bind: the port was not taken?")
	}
}

func TestRegistryStartFailureShowsLog(t *testing.T) {
	ft := &fatalRecorder{TB: t}
	r := StartRegistry(ft, RegistryOptions{Plain: true, NoAuth: true})
	r.Stop()
	if err := os.WriteFile(r.ConfigFile, []byte("version: 0.1\nstorage: {nosuchdriver: {}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runInGoroutine(func() { r.Start() })
	if !strings.Contains(ft.msg, "exited before answering GET /v2/") || !strings.Contains(ft.msg, "StorageDriver not registered: nosuchdriver") || strings.Contains(ft.msg, "start 1 of") {
		t.Errorf("fatal message = %q", ft.msg)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
