package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/oci"
)

// registryModes are the source registries every create test runs
// against: with the OCI referrers API, and without it (so the state's
// sigstore bundle is found through the sha256-<hex> tag fallback).
var registryModes = []struct {
	name      string
	referrers bool
}{
	{"referrers-api", true},
	{"tag-fallback", false},
}

// itemsByRole groups refs by role.
func itemsByRole(b *Bundle) map[Role][]string {
	out := map[Role][]string{}
	for _, it := range b.Items() {
		out[it.Role] = append(out[it.Role], it.Ref)
	}
	return out
}

func TestCreateInspectVerify(t *testing.T) {
	for _, mode := range registryModes {
		t.Run(mode.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, startRegistry(t, mode.referrers), newClient(t))
			b, path := f.create(t)

			ref, desc := b.Root()
			if ref != f.host+"/fleet/line-3:v1" || desc.Digest != f.stateDig || desc.MediaType != ocispec.MediaTypeImageManifest {
				t.Fatalf("Root() = %s, %+v; want the state %s", ref, desc, f.stateDig)
			}
			got := itemsByRole(b)
			want := map[Role][]string{
				RoleState:     {ref},
				RoleImage:     {f.web + ":1.2", f.worker + ":2.0"},
				RoleChart:     {f.chart + ":0.1.0_build.1"},
				RoleSignature: nil,
			}
			for _, role := range []Role{RoleState, RoleImage, RoleChart} {
				if !slices.Equal(got[role], want[role]) {
					t.Errorf("%s items = %v, want %v", role, got[role], want[role])
				}
			}
			// One sigstore bundle referrer (by digest) and the legacy .sig tag.
			sigs := got[RoleSignature]
			sigTag := f.host + "/fleet/line-3:sha256-" + f.stateDig.Encoded() + ".sig"
			if len(sigs) != 2 || !slices.Contains(sigs, sigTag) || !strings.HasPrefix(sigs[1], f.host+"/fleet/line-3@sha256:") {
				t.Errorf("signature items = %v, want a referrer by digest and %s", sigs, sigTag)
			}
			wantImages := []string{f.web + "@" + f.webIdx.String(), f.worker + "@" + f.workerD.String()}
			if !slices.Equal(b.Images(), wantImages) {
				t.Errorf("Images() = %v, want %v", b.Images(), wantImages)
			}
			for _, it := range b.Items() {
				if it.Ref == f.web+":1.2" {
					if it.Digest != f.webIdx || !slices.Equal(it.Platforms, []string{"linux/amd64", "linux/arm64"}) || len(it.Excluded) != 0 {
						t.Errorf("web item = %+v; want the index %s with both platforms", it, f.webIdx)
					}
					// index, 2 manifests, 2 configs, 4 layers
					if it.Blobs != 9 {
						t.Errorf("web item holds %d blobs, want 9", it.Blobs)
					}
				}
			}

			// Every blob is stored once: the layer web and worker share too.
			fh, _ := os.Open(path)
			defer fh.Close()
			idx, err := indexTar(fh)
			if err != nil {
				t.Fatal(err)
			}
			s := b.Summary()
			if s.Blobs != len(idx.blobs) || s.Repositories != 4 {
				t.Errorf("Summary = %+v; the tar holds %d blobs; want 4 repositories", s, len(idx.blobs))
			}
			if _, ok := idx.blobs[f.shared]; !ok {
				t.Errorf("shared layer %s missing", f.shared)
			}

			if err := b.Verify(ctx, VerifyOptions{}); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			// The state's signature verifies offline, through the bundle.
			d, err := name.NewDigest(f.state.Repo() + "@" + f.stateDig.String())
			if err != nil {
				t.Fatal(err)
			}
			res, err := cosign.Verify(ctx, d, []cosign.Key{f.key.key}, remote.WithTransport(b.Transport()))
			if err != nil {
				t.Fatalf("cosign.Verify through the bundle: %v", err)
			}
			if res.Format != cosign.FormatBundle {
				t.Errorf("verified format %s, want bundle", res.Format)
			}
			// And so does the legacy .sig alone: a registry that only has
			// the tag and blobs is enough.
			other := newTestKey(t)
			if _, err := cosign.Verify(ctx, d, []cosign.Key{other.key}, remote.WithTransport(b.Transport())); !errors.Is(err, cosign.ErrKeyMismatch) {
				t.Errorf("verify with another key: %v, want ErrKeyMismatch", err)
			}

			// The file is what archive/tar writes for its entries.
			x, _ := os.ReadFile(path)
			var again bytes.Buffer
			tr, tw := tar.NewReader(bytes.NewReader(x)), tar.NewWriter(&again)
			for {
				hdr, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				data, _ := io.ReadAll(tr)
				tw.WriteHeader(fileHeader(hdr.Name, int64(len(data))))
				tw.Write(data)
			}
			tw.Close()
			if !bytes.Equal(again.Bytes(), x) {
				t.Error("the bundle differs from archive/tar's rendering of its entries")
			}

			// A second create gives the same bytes.
			_, path2 := f.create(t)
			y, _ := os.ReadFile(path2)
			if string(x) != string(y) {
				t.Error("two creates of the same content differ")
			}
		})
	}
}

func TestLegacySignatureThroughBundle(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, startRegistry(t, false), newClient(t))
	b, _ := f.create(t)
	// Serve the bundle without its referrers: only the .sig tag is left.
	d, _ := name.NewDigest(f.state.Repo() + "@" + f.stateDig.String())
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if strings.Contains(r.URL.Path, "/referrers/") {
			return errResponse(r, http.StatusNotFound, "NOT_FOUND", "no referrers API"), nil
		}
		return b.Transport().RoundTrip(r)
	})
	res, err := cosign.Verify(ctx, d, []cosign.Key{f.key.key}, remote.WithTransport(rt))
	if err != nil || res.Format != cosign.FormatLegacy {
		t.Fatalf("legacy verify through the bundle = %+v, %v", res, err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestVerifyAlteredBlob(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, startRegistry(t, true), newClient(t))
	_, path := f.create(t)
	testenv.AlterBundleBlob(t, path, f.shared.String())

	b, err := Open(ctx, path) // layers are checked when read
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	err = b.Verify(ctx, VerifyOptions{})
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Verify of an altered bundle: %v, want ErrDigestMismatch", err)
	}
	for _, want := range []string{f.shared.String(), "layer of", "1 of "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Verify error %q does not say %q", err, want)
		}
	}
	// Serving it fails too, naming the blob.
	resp, err := b.Transport().RoundTrip(mustRequest(t, "GET", "http://"+f.host+"/v2/acme/worker/blobs/"+f.shared.String()))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET altered blob: %v, %v", resp, err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), f.shared.String()) {
		t.Errorf("reading the altered blob: %v, want a digest mismatch naming it", err)
	}
	// So does pushing it.
	_, err = b.Push(ctx, newClient(t), PushOptions{Target: startRegistry(t, true) + "/plant"})
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), f.shared.String()) {
		t.Errorf("Push of an altered bundle: %v, want a digest mismatch naming %s", err, f.shared)
	}

	// An altered manifest is refused when the bundle is opened.
	_, path = f.create(t)
	testenv.AlterBundleBlob(t, path, f.webKids["linux/arm64"].String())
	_, err = Open(ctx, path)
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), f.webKids["linux/arm64"].String()) || !strings.Contains(err.Error(), "linux/arm64") {
		t.Errorf("Open with an altered manifest: %v", err)
	}
}

func mustRequest(t testing.TB, method, url string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPushPullBack(t *testing.T) {
	for _, mode := range registryModes {
		t.Run(mode.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, startRegistry(t, true), newClient(t))
			b, _ := f.create(t)
			plant := startRegistry(t, mode.referrers)
			c := newClient(t)

			res, err := b.Push(ctx, c, PushOptions{Target: "oci://" + plant + "/site/"})
			if err != nil {
				t.Fatalf("Push: %v", err)
			}
			if res.Target != plant+"/site" || res.Root != plant+"/site/fleet/line-3@"+f.stateDig.String() {
				t.Errorf("result target %s root %s", res.Target, res.Root)
			}
			// (The in-process registry keeps blobs across repositories, so
			// web's layers are there already when worker's are pushed.)
			if res.Blobs.Pushed == 0 || res.Manifests.Skipped != 0 || res.Manifests.Pushed != 8 || res.Tags.Pushed != 5 {
				t.Errorf("first push = %+v", res)
			}
			want := map[string]string{}
			for _, m := range res.Repositories {
				want[m.Source] = m.Target
			}
			if want[f.web] != plant+"/site/acme/web" || want[f.chart] != plant+"/site/charts/metrics" {
				t.Errorf("mappings = %v", res.Repositories)
			}

			// Every reference resolves to the same digest there.
			for _, it := range b.Items() {
				r, _ := parseRefName(it.Ref)
				target, _ := MapRepository(r.repo, plant+"/site")
				tref, _ := oci.ParseReference(target + "@" + it.Digest.String())
				if it.Tag != "" {
					tref = tref.WithTag(it.Tag)
				}
				got, err := c.Resolve(ctx, tref)
				if err != nil || got.Digest != it.Digest {
					t.Errorf("%s in the plant registry: %v, %v; want %s", tref, got.Digest, err, it.Digest)
				}
			}
			// The state verifies and pulls from there.
			state, _ := oci.ParseReference(res.Root)
			d, _ := c.Name(state)
			if _, err := cosign.Verify(ctx, d, []cosign.Key{f.key.key}, c.RemoteOptions(ctx)...); err != nil {
				t.Fatalf("verify in the plant registry: %v", err)
			}
			pulled, err := (&deliver.Remote{Client: c}).Pull(ctx, state, filepath.Join(t.TempDir(), "state"), deliver.PullOptions{Insecure: true})
			if err != nil || pulled.Digest != f.stateDig.String() {
				t.Fatalf("pull from the plant registry: %+v, %v", pulled, err)
			}

			// Pushing again skips everything.
			again, err := b.Push(ctx, c, PushOptions{Target: plant + "/site"})
			if err != nil {
				t.Fatal(err)
			}
			if again.Blobs.Pushed+again.Manifests.Pushed+again.Tags.Pushed != 0 || again.Blobs.Skipped != res.Blobs.Pushed+res.Blobs.Skipped ||
				again.Manifests.Skipped != res.Manifests.Pushed || again.Tags.Skipped != res.Tags.Pushed {
				t.Errorf("second push = %+v, want everything of %+v skipped", again, res)
			}
		})
	}
}

func TestPlatforms(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, startRegistry(t, true), newClient(t))
	b, path := f.create(t, "linux/arm64")
	if !slices.Equal(b.Platforms(), []string{"linux/arm64"}) {
		t.Errorf("Platforms() = %v", b.Platforms())
	}
	for _, it := range b.Items() {
		if it.Ref == f.web+":1.2" {
			if it.Digest != f.webIdx || !slices.Equal(it.Platforms, []string{"linux/arm64"}) || !slices.Equal(it.Excluded, []string{"linux/amd64"}) {
				t.Errorf("web = %+v; want the unchanged index with linux/arm64 only", it)
			}
		}
	}
	fh, _ := os.Open(path)
	defer fh.Close()
	idx, err := indexTar(fh)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := idx.blobs[f.webKids["linux/amd64"]]; ok {
		t.Error("the amd64 manifest was bundled")
	}
	if _, ok := idx.blobs[f.webKids["linux/arm64"]]; !ok {
		t.Error("the arm64 manifest was not bundled")
	}
	// worker is a single image (amd64): locked, so bundled whatever the
	// platform.
	if _, ok := idx.blobs[f.workerD]; !ok {
		t.Error("the single-platform worker image was left out")
	}
	if err := b.Verify(ctx, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	tr := b.Transport()
	for kid, want := range map[string]int{"linux/amd64": 404, "linux/arm64": 200} {
		resp, _ := tr.RoundTrip(mustRequest(t, "GET", "https://"+f.host+"/v2/acme/web/manifests/"+f.webKids[kid].String()))
		if resp.StatusCode != want {
			t.Errorf("GET %s child: %d, want %d", kid, resp.StatusCode, want)
		}
	}

	// A bundle made for one platform that lacks a child for another is
	// only valid because it says so.
	raw, _ := os.ReadFile(path)
	raw = []byte(strings.Replace(string(raw), `"`+AnnotationPlatforms+`": "linux/arm64"`, `"`+AnnotationPlatforms+`": "linux/amd64"`, 1))
	other := filepath.Join(t.TempDir(), "other.tar")
	os.WriteFile(other, raw, 0o644)
	if _, err := Open(ctx, other); !errors.Is(err, ErrInvalidBundle) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Open with a platform gap not accounted for: %v", err)
	}

	// A registry that checks an index's children refuses it: the rest is
	// pushed, the arm64 image among it, and the index is reported.
	c := newClient(t)
	plant := startRegistry(t, true)
	res, err := b.Push(ctx, c, PushOptions{Target: plant + "/p"})
	if !errors.Is(err, ErrIncomplete) || len(res.Refused) != 1 || !strings.Contains(res.Refused[0], f.webIdx.String()) ||
		!strings.Contains(err.Error(), "leaves out") {
		t.Fatalf("push: %+v, %v; want the index %s refused", res, err, f.webIdx)
	}
	if res.Tags.Pushed != 4 || res.Manifests.Pushed != 6 {
		t.Errorf("push = %+v; want every tag and manifest but web's index", res)
	}
	arm, _ := oci.ParseReference(plant + "/p/acme/web@" + f.webKids["linux/arm64"].String())
	if _, err := c.Resolve(ctx, arm); err != nil {
		t.Errorf("the arm64 image in the plant registry: %v", err)
	}
	again, err := b.Push(ctx, c, PushOptions{Target: plant + "/p"})
	if !errors.Is(err, ErrIncomplete) || again.Blobs.Pushed+again.Manifests.Pushed+again.Tags.Pushed != 0 {
		t.Errorf("second push: %+v, %v", again, err)
	}
}

func TestTransport(t *testing.T) {
	f := newFixture(t, startRegistry(t, true), newClient(t))
	b, _ := f.create(t)
	tr := b.Transport()
	var referrer digest.Digest
	for _, it := range b.Items() {
		if it.Role == RoleSignature && it.Tag == "" {
			referrer = it.Digest
		}
	}
	host := "https://" + f.host
	for _, tc := range []struct {
		method, url string
		status      int
		code        string // distribution error code
		digest      digest.Digest
		ctype       string
		body        string // substring
	}{
		{method: "GET", url: host + "/v2/", status: 200},
		{method: "GET", url: "http://elsewhere.example/v2/", status: 200},
		{method: "GET", url: host + "/v2/fleet/line-3/manifests/v1", status: 200, digest: f.stateDig, ctype: ocispec.MediaTypeImageManifest},
		{method: "HEAD", url: host + "/v2/fleet/line-3/manifests/v1", status: 200, digest: f.stateDig},
		{method: "GET", url: host + "/v2/acme/web/manifests/" + f.webIdx.String(), status: 200, digest: f.webIdx, ctype: ocispec.MediaTypeImageIndex},
		{method: "GET", url: host + "/v2/acme/web/manifests/1.2", status: 200, digest: f.webIdx},
		{method: "GET", url: host + "/v2/acme/worker/blobs/" + f.shared.String(), status: 200, digest: f.shared},
		{method: "GET", url: host + "/v2/acme/web/blobs/" + f.shared.String(), status: 200, digest: f.shared},
		{method: "GET", url: host + "/v2/fleet/line-3/referrers/" + f.stateDig.String(), status: 200, ctype: ocispec.MediaTypeImageIndex, body: referrer.String()},
		{method: "GET", url: host + "/v2/fleet/line-3/referrers/" + f.stateDig.String() + "?artifactType=application/x-none", status: 200, body: `"manifests":[]`},
		{method: "GET", url: host + "/v2/fleet/line-3/referrers/" + f.webIdx.String(), status: 200, body: `"manifests":[]`},
		{method: "GET", url: host + "/v2/charts/metrics/tags/list", status: 200, body: `{"name":"charts/metrics","tags":["0.1.0_build.1"]}`},
		{method: "GET", url: host + "/v2/fleet/line-3/tags/list?n=1", status: 200, body: `"tags":["sha256-`},
		{method: "GET", url: host + "/v2/fleet/line-3/tags/list?last=sha256-zzz", status: 200, body: `"tags":["v1"]`},
		// unknown things
		{method: "GET", url: host + "/v2/acme/nope/manifests/1.2", status: 404, code: "NAME_UNKNOWN"},
		{method: "GET", url: "https://other.example/v2/acme/web/manifests/1.2", status: 404, code: "NAME_UNKNOWN"},
		{method: "GET", url: host + "/v2/acme/web/manifests/9.9", status: 404, code: "MANIFEST_UNKNOWN"},
		{method: "GET", url: host + "/v2/acme/web/manifests/" + f.stateDig.String(), status: 404, code: "MANIFEST_UNKNOWN"},
		{method: "GET", url: host + "/v2/acme/web/manifests/" + f.shared.String(), status: 404, code: "MANIFEST_UNKNOWN"},
		{method: "GET", url: host + "/v2/fleet/line-3/blobs/" + f.shared.String(), status: 404, code: "BLOB_UNKNOWN"},
		{method: "GET", url: host + "/v2/acme/web/blobs/sha256:nothex", status: 400, code: "DIGEST_INVALID"},
		{method: "GET", url: host + "/v2/Acme/web/manifests/1.2", status: 404, code: "NAME_INVALID"},
		{method: "GET", url: host + "/v2/_catalog", status: 404, code: "NOT_FOUND"},
		{method: "PUT", url: host + "/v2/acme/web/manifests/1.2", status: 405, code: "UNSUPPORTED"},
		{method: "DELETE", url: host + "/v2/acme/web/blobs/" + f.shared.String(), status: 405, code: "UNSUPPORTED"},
	} {
		resp, err := tr.RoundTrip(mustRequest(t, tc.method, tc.url))
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.url, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Errorf("%s %s: reading: %v", tc.method, tc.url, err)
		}
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d, want %d (%s)", tc.method, tc.url, resp.StatusCode, tc.status, body)
			continue
		}
		if tc.code != "" {
			var e struct {
				Errors []struct{ Code, Message string } `json:"errors"`
			}
			if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != tc.code {
				t.Errorf("%s %s: body %s, want error code %s", tc.method, tc.url, body, tc.code)
			}
		}
		if tc.digest != "" {
			if got := resp.Header.Get("Docker-Content-Digest"); got != tc.digest.String() {
				t.Errorf("%s %s: digest header %q, want %s", tc.method, tc.url, got, tc.digest)
			}
			if tc.method == "GET" && digest.FromBytes(body) != tc.digest {
				t.Errorf("%s %s: body does not match %s", tc.method, tc.url, tc.digest)
			}
			if tc.method == "HEAD" && (len(body) != 0 || resp.ContentLength <= 0) {
				t.Errorf("HEAD %s: body %d bytes, Content-Length %d", tc.url, len(body), resp.ContentLength)
			}
		}
		if tc.ctype != "" && resp.Header.Get("Content-Type") != tc.ctype {
			t.Errorf("%s %s: Content-Type %q, want %q", tc.method, tc.url, resp.Header.Get("Content-Type"), tc.ctype)
		}
		if tc.body != "" && !strings.Contains(string(body), tc.body) {
			t.Errorf("%s %s: body %s does not hold %s", tc.method, tc.url, body, tc.body)
		}
	}

	// Registry clients read the bundle unchanged: source/oci and
	// source/fetch through oci.Options.WrapTransport.
	c, err := oci.NewClient(oci.Options{
		DockerConfig:  filepath.Join(t.TempDir(), "config.json"),
		WrapTransport: func(http.RoundTripper) http.RoundTripper { return tr },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	got, err := c.Resolve(ctx, f.state)
	if err != nil || got.Digest != f.stateDig {
		t.Fatalf("oci Resolve through the bundle: %v, %v", got.Digest, err)
	}
	tags, err := c.Tags(ctx, f.state)
	if err != nil || !slices.Equal(tags, []string{"v1"}) {
		t.Errorf("oci Tags through the bundle: %v, %v", tags, err)
	}
	if _, err := (&deliver.Remote{Client: c}).Pull(ctx, f.state.WithDigest(f.stateDig.String()), filepath.Join(t.TempDir(), "s"), deliver.PullOptions{Insecure: true}); err != nil {
		t.Errorf("deliver.Pull through the bundle: %v", err)
	}
	// Docker Hub's API hosts are docker.io.
	if rp, full := b.lookupRepo("registry-1.docker.io", "library/nginx"); rp != nil || full != "docker.io/library/nginx" {
		t.Errorf("lookupRepo(registry-1.docker.io) = %v, %s", rp, full)
	}
}

func TestMapRepository(t *testing.T) {
	for _, tc := range []struct {
		orig, target, want string
		err                bool
	}{
		{orig: "ghcr.io/acme/web", target: "plant.local:5000/mirror", want: "plant.local:5000/mirror/acme/web"},
		{orig: "docker.io/library/nginx", target: "oci://plant.local:5000/", want: "plant.local:5000/library/nginx"},
		{orig: "registry.example:5000/acme/state", target: "10.0.0.5:5000/a/b", want: "10.0.0.5:5000/a/b/acme/state"},
		{orig: "ghcr.io/acme/web", target: "", err: true},
		{orig: "ghcr.io/acme/web", target: "plant/Mirror", err: true},
		{orig: "ghcr.io/acme/web", target: "plant:5000/a//b", err: true},
		{orig: "ghcr.io/acme/web", target: "plant@x", err: true},
		{orig: "ghcr.io", target: "plant", err: true},
	} {
		got, err := MapRepository(tc.orig, tc.target)
		if tc.err != (err != nil) || got != tc.want {
			t.Errorf("MapRepository(%q, %q) = %q, %v; want %q (error %v)", tc.orig, tc.target, got, err, tc.want, tc.err)
		}
	}
}
