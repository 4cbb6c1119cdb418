package testenv

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// tagPattern is the tag grammar of the OCI distribution spec.
var tagPattern = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)

var sha256Digest = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)

// SeedTags points every tag in tags at the manifest digest in repo, by
// writing distribution 2.8's filesystem storage layout directly, as a tag
// push writes it:
//
//	<StorageDir>/docker/registry/v2/repositories/<repo>/_manifests/tags/<tag>/current/link
//	<StorageDir>/docker/registry/v2/repositories/<repo>/_manifests/tags/<tag>/index/sha256/<hex>/link
//
// each holding the digest ("sha256:<hex>", no newline). That makes ten
// thousand tags in seconds, where pushing them one by one takes minutes.
// The manifest must have been pushed to repo before (its revision link is
// checked); a tag that exists is moved. The running registry serves the
// new tags at once (testenv configures no cache). Note that distribution
// 2.8 answers tags/list with every tag in one response, ignoring n and
// last: see Proxy.PaginateTags for pages.
func SeedTags(t testing.TB, reg *Registry, repo, digest string, tags []string) {
	t.Helper()
	if !sha256Digest.MatchString(digest) {
		t.Fatalf("testenv: SeedTags: digest %q is not sha256:<64 hex digits>", digest)
	}
	repo = strings.Trim(repo, "/")
	if repo == "" || strings.Contains(repo, "..") || strings.Contains(repo, "//") {
		t.Fatalf("testenv: SeedTags: bad repository name %q", repo)
	}
	hex := strings.TrimPrefix(digest, "sha256:")
	manifests := filepath.Join(reg.StorageDir, "docker", "registry", "v2", "repositories", filepath.FromSlash(repo), "_manifests")
	if _, err := os.Stat(filepath.Join(manifests, "revisions", "sha256", hex, "link")); err != nil {
		t.Fatalf("testenv: SeedTags: manifest %s was never pushed to %s (push it once first): %v", digest, repo, err)
	}
	for _, tag := range tags {
		if !tagPattern.MatchString(tag) {
			t.Fatalf("testenv: SeedTags: invalid tag %q", tag)
		}
	}
	if err := os.MkdirAll(filepath.Join(manifests, "tags"), 0o755); err != nil {
		t.Fatalf("testenv: SeedTags: %v", err)
	}
	// A few writers: the time goes into file system metadata.
	work := make(chan string)
	errs := make(chan error, seedWorkers)
	var wg sync.WaitGroup
	for range seedWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var first error
			for tag := range work {
				if first == nil {
					first = seedTag(filepath.Join(manifests, "tags", tag), hex, digest)
				}
			}
			errs <- first
		}()
	}
	for _, tag := range tags {
		work <- tag
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("testenv: SeedTags: %v", err)
		}
	}
}

const seedWorkers = 8

// seedTag writes one tag's index and current links in dir.
func seedTag(dir, hex, digest string) error {
	index := filepath.Join(dir, "index", "sha256", hex)
	for _, d := range []string{dir, filepath.Join(dir, "index"), filepath.Join(dir, "index", "sha256"), index, filepath.Join(dir, "current")} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	link := []byte(digest)
	if err := os.WriteFile(filepath.Join(index, "link"), link, 0o644); err != nil {
		return err
	}
	// current/link last: the tag exists for the registry only once it is
	// complete.
	return writeFileAtomic(filepath.Join(dir, "current", "link"), link)
}

// writeFileAtomic writes data to a temp file next to path and renames it.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".testenv-tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
