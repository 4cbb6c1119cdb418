package testenv

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestProxyTLSAuth(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	p := StartProxy(t, reg)
	if !strings.HasPrefix(p.Host(), "127.0.0.1:") || p.Host() == reg.Host() || p.URL() != "https://"+p.Host() || p.Registry() != reg {
		t.Fatalf("proxy host %s, URL %s (registry %s)", p.Host(), p.URL(), reg.Host())
	}
	if got := p.Ref("/a/b:c"); got != p.Host()+"/a/b:c" {
		t.Errorf("Ref = %s", got)
	}

	// The registry's CA is all a client needs; the registry's htpasswd
	// auth applies through the proxy.
	client := reg.HTTPClient()
	if _, err := http.Get(p.URL() + "/v2/"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("GET without the CA: err = %v, want a certificate error", err)
	}
	if got := getStatus(t, client, p.URL()+"/v2/", "", ""); got != http.StatusUnauthorized {
		t.Errorf("GET /v2/ without credentials = %d, want 401", got)
	}
	if got := getStatus(t, client, p.URL()+"/v2/", reg.Username, "wrong"); got != http.StatusUnauthorized {
		t.Errorf("GET /v2/ with a wrong password = %d, want 401", got)
	}
	if got := getStatus(t, client, p.URL()+"/v2/", reg.Username, reg.Password); got != http.StatusOK {
		t.Errorf("GET /v2/ with credentials = %d, want 200", got)
	}
	if got := getStatus(t, client, p.URL()+"/v2/_catalog?n=5", reg.Username, reg.Password); got != http.StatusOK {
		t.Errorf("GET /v2/_catalog = %d, want 200", got)
	}
	reqs := p.Requests()
	if len(reqs) != 4 { // the one without the CA never got through TLS
		t.Fatalf("requests = %+v, want 4", reqs)
	}
	if r := reqs[3]; r.Method != http.MethodGet || r.Path != "/v2/_catalog" || r.Query != "n=5" || r.Status != http.StatusOK || r.Time.IsZero() {
		t.Errorf("catalog request recorded as %+v", r)
	}
	if reqs[0].Status != http.StatusUnauthorized || reqs[2].Status != http.StatusOK {
		t.Errorf("requests recorded as %+v", reqs)
	}

	// Upload locations name the proxy, so that a push goes through it
	// entirely.
	req, _ := http.NewRequest(http.MethodPost, p.URL()+"/v2/testenv/proxied/blobs/uploads/", nil)
	req.SetBasicAuth(reg.Username, reg.Password)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusAccepted || err != nil || (loc.Host != "" && loc.Host != p.Host()) {
		t.Errorf("POST blob upload: %s, Location %q", resp.Status, resp.Header.Get("Location"))
	}

	// DockerConfigFor gives the credentials for the proxy's host.
	cfgDir := reg.DockerConfigFor(t, p.Host())
	t.Setenv("DOCKER_CONFIG", cfgDir)
	opts := []remote.Option{remote.WithTransport(reg.HTTPClient().Transport), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
	p.Reset()
	if n := len(p.Requests()); n != 0 {
		t.Fatalf("after Reset: %d requests", n)
	}
	before := reg.RequestCount(`"PATCH `) + reg.RequestCount(`"PUT `)
	img, err := random.Image(2048, 3)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(p.Ref("testenv/proxied:v1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, opts...); err != nil {
		t.Fatalf("push through the proxy: %v", err)
	}
	digest, _ := img.Digest()
	if n := p.Count(http.MethodPut, "/v2/testenv/proxied/manifests/v1"); n != 1 {
		t.Errorf("manifest PUTs = %d, want 1", n)
	}
	uploads := p.Count(http.MethodPost, "/v2/testenv/proxied/blobs/uploads/")
	if uploads < 4 { // three layers and the config
		t.Errorf("blob upload POSTs = %d, want at least 4", uploads)
	}
	finished := p.Count(http.MethodPut, "/v2/testenv/proxied/blobs/uploads/") + p.Count(http.MethodPatch, "/v2/testenv/proxied/blobs/uploads/")
	if finished < uploads {
		t.Errorf("upload PATCH/PUTs through the proxy = %d for %d uploads: Location not rewritten?", finished, uploads)
	}
	// Every upload request the registry saw came through the proxy.
	Eventually(t, 5*time.Second, func() bool {
		return reg.RequestCount(`"PATCH `)+reg.RequestCount(`"PUT `)-before == finished+1
	}, "the registry logs the proxy's %d upload requests and 1 manifest PUT", finished)
	if n := p.Count("", ""); n != len(p.Requests()) {
		t.Errorf("Count(\"\", \"\") = %d, len(Requests) = %d", n, len(p.Requests()))
	}
	for _, r := range p.Requests() {
		if r.Status == 0 || r.Status >= 500 {
			t.Errorf("request %+v", r)
		}
	}

	// A poll: one HEAD of the manifest on a warm client.
	if _, err := remote.Head(ref, opts...); err != nil {
		t.Fatal(err)
	}
	p.Reset()
	desc, err := remote.Head(ref, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != digest {
		t.Errorf("HEAD through the proxy: %s, want %s", desc.Digest, digest)
	}
	if n := p.Count(http.MethodHead, "/v2/testenv/proxied/manifests/v1"); n != 1 {
		t.Errorf("manifest HEADs = %d, want 1 (%+v)", n, p.Requests())
	}

	// Stop: refused for new connections, the registry itself still runs.
	keptAlive := reg.HTTPClient()
	if got := getStatus(t, keptAlive, p.URL()+"/v2/", reg.Username, reg.Password); got != http.StatusOK {
		t.Fatalf("GET /v2/ = %d", got)
	}
	p.Stop()
	p.Stop() // no-op
	if _, err := reg.HTTPClient().Get(p.URL() + "/v2/"); !isConnRefused(err) {
		t.Errorf("GET after Stop: err = %v, want connection refused", err)
	}
	if _, err := keptAlive.Get(p.URL() + "/v2/"); err == nil {
		t.Error("GET on a kept-alive connection after Stop succeeded")
	}
	freshOpts := []remote.Option{remote.WithTransport(reg.HTTPClient().Transport), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
	if _, err := remote.Head(ref, freshOpts...); !isConnRefused(err) {
		t.Errorf("HEAD after Stop: err = %v, want connection refused", err)
	}
	if got := getStatus(t, reg.HTTPClient(), reg.URL()+"/v2/", reg.Username, reg.Password); got != http.StatusOK {
		t.Errorf("registry GET /v2/ while the proxy is stopped = %d", got)
	}

	// Start: same port, works again.
	host := p.Host()
	p.Start()
	if p.Host() != host {
		t.Errorf("host changed from %s to %s", host, p.Host())
	}
	desc, err = remote.Head(ref, freshOpts...)
	if err != nil || desc.Digest != digest {
		t.Errorf("HEAD after Start: %v, %v", desc, err)
	}
}

func TestProxyPlainRegistryDown(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{Plain: true, NoAuth: true})
	p := StartProxy(t, reg)
	if p.URL() != "http://"+p.Host() {
		t.Fatalf("URL = %s", p.URL())
	}
	ref, digest := pushRandomImage(t, reg, "plain/app:v1")
	pref, err := name.ParseReference(p.Ref("plain/app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(pref)
	if err != nil || desc.Digest != digest {
		t.Fatalf("HEAD %s through the proxy: %v %v (pushed %s)", ref, desc, err, digest)
	}
	// The registry down behind the proxy: 502, recorded.
	reg.Stop()
	p.Reset()
	if got := getStatus(t, http.DefaultClient, p.URL()+"/v2/", "", ""); got != http.StatusBadGateway {
		t.Errorf("GET /v2/ with the registry down = %d, want 502", got)
	}
	if r := p.Requests(); len(r) != 1 || r[0].Status != http.StatusBadGateway {
		t.Errorf("requests = %+v", r)
	}
	reg.Start()
	if got := getStatus(t, http.DefaultClient, p.URL()+"/v2/", "", ""); got != http.StatusOK {
		t.Errorf("GET /v2/ after the registry returned = %d", got)
	}
}

func TestDockerConfigFor(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{Plain: true})
	read := func(dir string) map[string]string {
		t.Helper()
		var cfg struct {
			Auths map[string]struct{ Auth string } `json:"auths"`
		}
		if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dir, "config.json"))), &cfg); err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for h, a := range cfg.Auths {
			out[h] = a.Auth
		}
		return out
	}
	auths := read(reg.DockerConfigFor(t, "127.0.0.1:1", "localhost:2"))
	want := read(reg.DockerConfigDir)[reg.Host()]
	if len(auths) != 2 || auths["127.0.0.1:1"] != want || auths["localhost:2"] != want || want == "" {
		t.Errorf("auths = %v, want both hosts with %q", auths, want)
	}
	dir := reg.DockerConfigFor(t)
	if a := read(dir); len(a) != 1 || a[reg.Host()] != want {
		t.Errorf("default auths = %v", a)
	}
	if st, err := os.Stat(filepath.Join(dir, "config.json")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("config.json: %v %v", st.Mode(), err)
	}
	noAuth := StartRegistry(t, RegistryOptions{Plain: true, NoAuth: true})
	if a := read(noAuth.DockerConfigFor(t, "127.0.0.1:1")); len(a) != 0 {
		t.Errorf("NoAuth auths = %v", a)
	}
}
