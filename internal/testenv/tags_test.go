package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	orasremote "oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

type tagsPage struct {
	tags []string
	next string // the Link rel="next" target, "" on the last page
}

var linkNext = regexp.MustCompile(`^<([^>]+)>;\s*rel="next"$`)

func getTags(t *testing.T, c *http.Client, base, path string, reg *Registry) tagsPage {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(reg.Username, reg.Password)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	var body struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	page := tagsPage{tags: body.Tags}
	if link := resp.Header.Get("Link"); link != "" {
		m := linkNext.FindStringSubmatch(link)
		if m == nil {
			t.Fatalf("GET %s: Link %q", path, link)
		}
		page.next = m[1]
	}
	return page
}

func headDigest(t *testing.T, c *http.Client, base, repo, tag string, reg *Registry) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodHead, base+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
	req.SetBasicAuth(reg.Username, reg.Password)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD manifest %s: %s", tag, resp.Status)
	}
	return resp.Header.Get("Docker-Content-Digest")
}

func TestSeedTags10000(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	const repo = "testenv/many"
	_, digest := pushRandomImage(t, reg, repo+":seed", remote.WithTransport(reg.HTTPClient().Transport),
		remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}))

	// Tags whose lexical and numeric orders differ.
	var tags []string
	for i := 0; i < 10_000; i++ {
		tags = append(tags, fmt.Sprintf("1.%d.%d", i/100, i%100))
	}
	start := time.Now()
	SeedTags(t, reg, repo, digest.String(), tags)
	t.Logf("seeded %d tags in %s", len(tags), time.Since(start).Round(time.Millisecond))

	// Exactly the layout a pushed tag has.
	manifests := filepath.Join(reg.StorageDir, "docker", "registry", "v2", "repositories", repo, "_manifests", "tags")
	hex := strings.TrimPrefix(digest.String(), "sha256:")
	for _, tag := range []string{"seed", "1.42.7"} {
		for _, f := range []string{"current/link", "index/sha256/" + hex + "/link"} {
			if got := readFile(t, filepath.Join(manifests, tag, f)); got != digest.String() {
				t.Errorf("%s/%s = %q, want %q", tag, f, got, digest)
			}
		}
		var files []string
		_ = filepath.Walk(filepath.Join(manifests, tag), func(p string, info os.FileInfo, err error) error {
			if err == nil {
				rel, _ := filepath.Rel(manifests, p)
				files = append(files, fmt.Sprintf("%s %v", strings.Replace(rel, tag, "TAG", 1), info.Mode()))
			}
			return nil
		})
		want := []string{
			"TAG drwxr-xr-x", "TAG/current drwxr-xr-x", "TAG/current/link -rw-r--r--",
			"TAG/index drwxr-xr-x", "TAG/index/sha256 drwxr-xr-x", "TAG/index/sha256/" + hex + " drwxr-xr-x",
			"TAG/index/sha256/" + hex + "/link -rw-r--r--",
		}
		if !slices.Equal(files, want) {
			t.Errorf("tag %s: files\n%s\nwant\n%s", tag, strings.Join(files, "\n"), strings.Join(want, "\n"))
		}
	}

	all := append([]string{"seed"}, tags...)
	slices.Sort(all)
	client := reg.HTTPClient()

	// distribution 2.8 ignores n: one response with every tag, no Link.
	direct := getTags(t, client, reg.URL(), "/v2/"+repo+"/tags/list?n=100", reg)
	if direct.next != "" || len(direct.tags) != len(all) {
		t.Errorf("registry tags/list?n=100: %d tags, Link %q; want all %d, no Link (distribution 2.8 does not paginate tags)", len(direct.tags), direct.next, len(all))
	}
	if !slices.Equal(slices.Sorted(slices.Values(direct.tags)), all) {
		t.Error("the registry's tag list is not the seeded tags")
	}

	// Through a proxy that paginates, n=100 walks every tag in order.
	p := StartProxy(t, reg)
	p.PaginateTags(100)
	var got []string
	pages := 0
	for path := "/v2/" + repo + "/tags/list?n=100"; path != ""; pages++ {
		page := getTags(t, client, p.URL(), path, reg)
		if len(page.tags) == 0 || len(page.tags) > 100 {
			t.Fatalf("page %d (%s) has %d tags", pages, path, len(page.tags))
		}
		got = append(got, page.tags...)
		path = page.next
		if pages > 200 {
			t.Fatal("more than 200 pages")
		}
	}
	if !slices.Equal(got, all) {
		t.Errorf("paginated tags: %d, want %d in lexical order", len(got), len(all))
	}
	if want := (len(all) + 99) / 100; pages != want || p.Count(http.MethodGet, "/v2/"+repo+"/tags/list") != want {
		t.Errorf("%d pages, %d requests, want %d", pages, p.Count(http.MethodGet, "/v2/"+repo+"/tags/list"), want)
	}
	// A smaller n, a last in the middle, the end.
	if pg := getTags(t, client, p.URL(), "/v2/"+repo+"/tags/list?n=3&last=1.42.7", reg); !slices.Equal(pg.tags, []string{"1.42.70", "1.42.71", "1.42.72"}) ||
		pg.next != "/v2/"+repo+"/tags/list?last=1.42.72&n=3" {
		t.Errorf("n=3 after 1.42.7: %+v", pg)
	}
	if pg := getTags(t, client, p.URL(), "/v2/"+repo+"/tags/list?last=seed", reg); len(pg.tags) != 0 || pg.next != "" {
		t.Errorf("after the last tag: %+v", pg)
	}
	// No credentials: the registry's 401 comes through.
	if got := getStatus(t, client, p.URL()+"/v2/"+repo+"/tags/list", "", ""); got != http.StatusUnauthorized {
		t.Errorf("tags/list without credentials = %d, want 401", got)
	}
	// oras-go (berth's registry client) follows the Link headers.
	// (go-containerregistry's remote.List cannot: it takes 127.0.0.1 for
	// a plain-HTTP registry and refuses the https next-page URL.)
	orepo, err := orasremote.NewRepository(p.Ref(repo))
	if err != nil {
		t.Fatal(err)
	}
	orepo.Client = &auth.Client{
		Client:     reg.HTTPClient(),
		Credential: auth.StaticCredential(p.Host(), auth.Credential{Username: reg.Username, Password: reg.Password}),
	}
	orepo.TagListPageSize = 100
	p.Reset()
	var listed []string
	if err := orepo.Tags(context.Background(), "", func(tags []string) error {
		listed = append(listed, tags...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(listed, all) || p.Count(http.MethodGet, "/v2/"+repo+"/tags/list") < 101 {
		t.Errorf("oras Tags through the proxy: %d tags in %d requests", len(listed), p.Count(http.MethodGet, "/v2/"+repo+"/tags/list"))
	}

	// Seeded tags resolve to the digest, directly and through the proxy.
	for _, tag := range []string{"1.0.0", "1.42.7", "1.99.99"} {
		if d := headDigest(t, client, reg.URL(), repo, tag, reg); d != digest.String() {
			t.Errorf("HEAD %s = %q, want %s", tag, d, digest)
		}
		if d := headDigest(t, client, p.URL(), repo, tag, reg); d != digest.String() {
			t.Errorf("HEAD %s through the proxy = %q, want %s", tag, d, digest)
		}
	}
}

func TestSeedTagsNeedsPushedManifest(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{Plain: true, NoAuth: true})
	ft := &fatalRecorder{TB: t}
	runInGoroutine(func() {
		SeedTags(ft, reg, "never/pushed", "sha256:"+strings.Repeat("ab", 32), []string{"v1"})
	})
	if !strings.Contains(ft.msg, "was never pushed to never/pushed") {
		t.Errorf("fatal message = %q", ft.msg)
	}
	_, digest := pushRandomImage(t, reg, "some/app:v1")
	for _, bad := range []struct{ digest, tag, msg string }{
		{"sha256:abc", "v1", "is not sha256"},
		{digest.String(), "-bad", `invalid tag "-bad"`},
		{digest.String(), "a/b", `invalid tag "a/b"`},
	} {
		ft := &fatalRecorder{TB: t}
		runInGoroutine(func() { SeedTags(ft, reg, "some/app", bad.digest, []string{bad.tag}) })
		if !strings.Contains(ft.msg, bad.msg) {
			t.Errorf("SeedTags(%s, %s): fatal message = %q, want %q", bad.digest, bad.tag, ft.msg, bad.msg)
		}
	}
}
