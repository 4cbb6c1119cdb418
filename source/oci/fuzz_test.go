package oci

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Seeds: what registries really serve. The Flux artifact berth pushes,
// a Helm chart (as `helm push` writes it), a folder pushed with `oras
// push` (no config media type of its own), an image index and a Docker
// manifest list, which must be refused.
func manifestSeeds(f *testing.F) [][]byte {
	_, flux, _, _, err := Artifact{
		Layer:       Blob{Digest: digest.FromString("layer"), Size: 5},
		Annotations: map[string]string{ocispec.AnnotationSource: "https://git.example.com/fleet.git", ocispec.AnnotationRevision: "main@sha1:0123", ocispec.AnnotationCreated: "2025-01-01T00:00:00Z"},
	}.manifest()
	if err != nil {
		f.Fatal(err)
	}
	d := "sha256:" + strings.Repeat("ab", 32)
	return [][]byte{
		flux,
		[]byte(`{"schemaVersion":2,"config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"` + d + `","size":117},"layers":[{"mediaType":"application/vnd.cncf.helm.chart.content.v1.tar+gzip","digest":"` + d + `","size":3541}],"annotations":{"org.opencontainers.image.title":"metrics","org.opencontainers.image.version":"2.3.1"}}`),
		[]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.unknown.artifact.v1","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"data":"e30="},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"` + d + `","size":120,"annotations":{"io.deis.oras.content.digest":"` + d + `","io.deis.oras.content.unpack":"true","org.opencontainers.image.title":"state"}}]}`),
		[]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + d + `","size":500,"platform":{"architecture":"arm64","os":"linux"}}]}`),
		[]byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}`),
		[]byte(`{"schemaVersion":2,"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"` + d + `","size":-1},{"mediaType":"x.tar+gzip","digest":"md5:00","size":1}]}`),
	}
}

// FuzzManifest decodes arbitrary (digest-verified, so attacker-chosen)
// manifest bytes and selects the layer to extract, as a pull does. It
// must never panic; an accepted manifest is an image manifest and survives
// a round trip through JSON; a selected layer is one of the manifest's and
// has the media type asked for, or is the Flux layer or the only tar+gzip
// one; every refusal is ErrNoLayer (a refusal, not a transport error); and
// opening the layer refuses a malformed digest or a size over the cap
// before any request.
func FuzzManifest(f *testing.F) {
	for _, s := range manifestSeeds(f) {
		f.Add(s, "")
	}
	f.Add(manifestSeeds(f)[1], "application/vnd.cncf.helm.chart.content.v1.tar+gzip")
	ref := Reference{Registry: "registry.invalid", Repository: "fleet", Digest: digest.FromString("m").String()}
	var requests atomic.Int64
	c, err := NewClient(Options{
		DockerConfig: filepath.Join(f.TempDir(), "config.json"),
		Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
			requests.Add(1)
			return nil, errors.New("no network in this fuzzer")
		}),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte, mediaType string) {
		m, err := decodeManifest(raw, ref)
		if err != nil {
			if m != nil {
				t.Fatalf("manifest %+v returned with error %v", m, err)
			}
			var typed struct {
				MediaType string `json:"mediaType"`
			}
			switch {
			case errors.Is(err, ErrNoLayer):
				if json.Unmarshal(raw, &typed) != nil || typed.MediaType == "" || typed.MediaType == ocispec.MediaTypeImageManifest {
					t.Fatalf("refused a manifest of media type %q: %v", typed.MediaType, err)
				}
			case json.Unmarshal(raw, new(ocispec.Manifest)) == nil:
				t.Fatalf("a manifest that decodes was refused: %v", err)
			}
			return
		}
		if m.MediaType != "" && m.MediaType != ocispec.MediaTypeImageManifest {
			t.Fatalf("accepted a manifest of media type %q", m.MediaType)
		}
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		m2, err := decodeManifest(again, ref)
		if err != nil {
			t.Fatalf("re-encoded manifest refused: %v\n%s", err, again)
		}
		if again2, _ := json.Marshal(m2); !bytes.Equal(again, again2) {
			t.Fatalf("round trip changed the manifest:\n%s\n%s", again, again2)
		}

		l, err := SelectLayer(m, mediaType)
		if err != nil {
			if !errors.Is(err, ErrNoLayer) {
				t.Fatalf("SelectLayer: %v, want ErrNoLayer", err)
			}
			return
		}
		if !slices.ContainsFunc(m.Layers, func(d ocispec.Descriptor) bool { return d.Digest == l.Digest && d.MediaType == l.MediaType }) {
			t.Fatalf("selected %+v, not a layer of the manifest", l)
		}
		switch {
		case mediaType != "" && l.MediaType != mediaType:
			t.Fatalf("asked for %q, got %q", mediaType, l.MediaType)
		case mediaType == "" && l.MediaType != ContentMediaType && !strings.HasSuffix(l.MediaType, "tar+gzip") && l.MediaType != dockerLayerGzip:
			t.Fatalf("selected a %q layer", l.MediaType)
		}

		// A layer the pull must refuse is refused before any request (the
		// others would reach the transport, which oras-go retries).
		if l.Size <= 1<<20 && l.Digest.Validate() == nil {
			return
		}
		before := requests.Load()
		rc, err := c.OpenBlob(context.Background(), ref, l, 1<<20)
		if err == nil {
			rc.Close()
		}
		if requests.Load() != before || !(errors.Is(err, ErrTooLarge) || errors.Is(err, ErrDigestMismatch)) {
			t.Fatalf("layer %+v: %v after %d requests, want a refusal before any", l, err, requests.Load()-before)
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// FuzzTags lists the tags of a registry whose first tag-list page is
// arbitrary bytes with an arbitrary Link header; a page it links to lists
// one more tag and ends. Listing must never panic or hang; it fails when
// the page is not a JSON tag list; what it returns are tags of the pages,
// signature tags left out; and no request leaves the test registry.
func FuzzTags(f *testing.F) {
	h := strings.Repeat("0", 64)
	for _, s := range []struct{ body, link string }{
		{`{"name":"fleet","tags":["v1.0.0","v1.1.0","canary","sha256-` + h + `.sig","sha256-` + h + `"]}`, ""},
		{`{"name":"fleet","tags":["a"]}`, `</v2/fleet/tags/list?last=a&n=1>; rel="next"`},
		{`{"name":"fleet","tags":[]}`, `<http://elsewhere.invalid/v2/fleet/tags/list?last=a>; rel="next"`},
		{`{"name":"fleet","tags":null}`, ""},
		{`{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}`, ""},
		{`{"tags":["a"]} trailing`, `<?last=a>; rel="next"`},
	} {
		f.Add([]byte(s.body), s.link)
	}
	var page1 atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/fleet/tags/list" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.URL.RawQuery == "" {
			p := page1.Load().(tagPage)
			if p.link != "" {
				w.Header()["Link"] = []string{p.link}
			}
			w.Write(p.body)
			return
		}
		w.Write([]byte(`{"name":"fleet","tags":["from-page-2"]}`))
	}))
	f.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	var offHost atomic.Int64
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr != u.Host {
			offHost.Add(1)
			return nil, fmt.Errorf("dial %s: not the test registry", addr)
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	c, err := NewClient(Options{Insecure: true, DockerConfig: filepath.Join(f.TempDir(), "config.json"), Transport: base})
	if err != nil {
		f.Fatal(err)
	}
	ref := Reference{Registry: u.Host, Repository: "fleet"}
	f.Fuzz(func(t *testing.T, body []byte, link string) {
		if strings.ContainsAny(link, "\r\n\x00") {
			return // not a header value a server can send
		}
		page1.Store(tagPage{body: body, link: link})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		offBefore := offHost.Load()
		tags, err := c.Tags(ctx, ref)
		if ctx.Err() != nil {
			t.Fatalf("listing tags took over 10s: %v", err)
		}
		if offHost.Load() != offBefore && err == nil {
			t.Fatalf("a request left the registry and listing succeeded")
		}
		var page struct {
			Tags []string `json:"tags"`
		}
		decErr := json.NewDecoder(bytes.NewReader(body)).Decode(&page)
		if err != nil {
			return
		}
		if decErr != nil {
			t.Fatalf("page 1 %q is not a tag list (%v), yet Tags = %q", body, decErr, tags)
		}
		for _, tag := range tags {
			if IsSignatureTag(tag) {
				t.Errorf("signature tag %q listed", tag)
			}
			if tag != "from-page-2" && !slices.Contains(page.Tags, tag) {
				t.Errorf("tag %q is on no page", tag)
			}
		}
	})
}

type tagPage struct {
	body []byte
	link string
}

// FuzzDockerConfig opens an arbitrary Docker config.json as the credential
// store, as `--docker-config` and a source's credentials.dockerConfig do,
// and looks up credentials for a registry through the oras-go store and
// the go-containerregistry keychain the signature code uses. It must never
// panic nor run a program (PATH is empty, so a credential helper named in
// the file cannot run); credentials found are the ones the file's auths
// entry holds.
func FuzzDockerConfig(f *testing.F) {
	auth := base64.StdEncoding.EncodeToString([]byte("robot$fleet:s3cr3t"))
	for _, s := range []string{
		`{"auths":{"registry.plant.local":{"auth":"` + auth + `"}}}`,
		`{"auths":{"https://registry.plant.local/v1/":{"auth":"` + auth + `"}},"credsStore":"pass"}`,
		`{"auths":{"registry.plant.local":{"username":"u","password":"p"}}}`,
		`{"auths":{"registry.plant.local":{"identitytoken":"tok"}},"credHelpers":{"registry.plant.local":"ecr-login"}}`,
		`{"auths":{"registry.plant.local":{"auth":"bm9jb2xvbg=="}}}`,
		`{}`, ``, `null`, `{"auths":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Setenv("PATH", f.TempDir())
	f.Setenv("DOCKER_CONFIG", f.TempDir())
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "config.json")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		store, err := openStore(p)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		const host = "registry.plant.local"
		cred, err := store.Get(ctx, host)
		if ctx.Err() != nil {
			t.Fatal("credential lookup took over 10s")
		}
		if err != nil {
			return
		}
		var cfg struct {
			Auths map[string]struct {
				Auth          string `json:"auth"`
				Username      string `json:"username"`
				Password      string `json:"password"`
				IdentityToken string `json:"identitytoken"`
			} `json:"auths"`
		}
		if json.Unmarshal(data, &cfg) == nil {
			if e, ok := cfg.Auths[host]; ok && e.Auth != "" {
				raw, derr := base64.StdEncoding.DecodeString(e.Auth)
				user, pass, ok := strings.Cut(string(raw), ":")
				if derr == nil && ok && (cred.Username != user || cred.Password != pass) {
					t.Errorf("auth %q gave %q:%q, want %q:%q", e.Auth, cred.Username, cred.Password, user, pass)
				}
			}
		}
		a, err := keychain{store}.Resolve(fakeResource(host))
		if err != nil {
			return
		}
		ac, err := a.Authorization()
		if err != nil {
			t.Fatalf("authenticator for %s: %v", host, err)
		}
		if cred.Username != "" && (ac.Username != cred.Username || ac.Password != cred.Password) {
			t.Errorf("keychain gives %q, store %q", ac.Username, cred.Username)
		}
	})
}

type fakeResource string

var _ authn.Resource = fakeResource("")

func (r fakeResource) String() string      { return string(r) }
func (r fakeResource) RegistryStr() string { return string(r) }
