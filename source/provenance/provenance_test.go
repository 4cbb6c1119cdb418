package provenance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

var when = time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))

func commitRepo(t *testing.T, origin string) (string, *git.Repository, plumbing.Hash) {
	t.Helper()
	dir := t.TempDir()
	repo, err := git.PlainInitWithOptions(dir, &git.PlainInitOptions{
		InitOptions: git.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName("main")},
	})
	if err != nil {
		t.Fatal(err)
	}
	for p, c := range map[string]string{"berth.yaml": "apiVersion: berth.dev/v1\n", "apps/web/compose.yaml": "services: {}\n"} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wt, _ := repo.Worktree()
	if err := wt.AddGlob("."); err != nil {
		t.Fatal(err)
	}
	sig := &object.Signature{Name: "ci", Email: "ci@example.com", When: when}
	h, err := wt.Commit("state", &git.CommitOptions{Author: sig, Committer: sig})
	if err != nil {
		t.Fatal(err)
	}
	if origin != "" {
		if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{origin}}); err != nil {
			t.Fatal(err)
		}
	}
	return dir, repo, h
}

func TestRead(t *testing.T) {
	dir, _, h := commitRepo(t, "https://ci:s3cret@git.example.com/acme/fleet.git")
	info, err := Read(filepath.Join(dir, "apps"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Source != "https://git.example.com/acme/fleet.git" {
		t.Errorf("Source = %q, credentials must be stripped", info.Source)
	}
	if want := "main@sha1:" + h.String(); info.Revision != want {
		t.Errorf("Revision = %q, want %q", info.Revision, want)
	}
	if !info.Created.Equal(when) || info.Created.Location() != time.UTC {
		t.Errorf("Created = %v, want %v in UTC", info.Created, when.UTC())
	}
	if len(info.Dirty) != 0 {
		t.Errorf("Dirty = %v on a clean tree", info.Dirty)
	}
}

func TestReadDirtyScopedToFolder(t *testing.T) {
	dir, _, _ := commitRepo(t, "")
	if err := os.WriteFile(filepath.Join(dir, "berth.yaml"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	info, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(info.Dirty, ",") != "berth.yaml" {
		t.Errorf("Dirty = %v, want [berth.yaml]", info.Dirty)
	}
	if info.Source != "" {
		t.Errorf("Source = %q without an origin", info.Source)
	}
	// A change outside the folder does not make the folder dirty.
	info, err = Read(filepath.Join(dir, "apps"))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Dirty) != 0 {
		t.Errorf("Dirty = %v for apps/, want none", info.Dirty)
	}
}

func TestReadDetachedTag(t *testing.T) {
	dir, repo, h := commitRepo(t, "")
	if _, err := repo.CreateTag("v1.2.0", h, nil); err != nil {
		t.Fatal(err)
	}
	wt, _ := repo.Worktree()
	if err := wt.Checkout(&git.CheckoutOptions{Hash: h}); err != nil {
		t.Fatal(err)
	}
	info, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := "v1.2.0@sha1:" + h.String(); info.Revision != want {
		t.Errorf("Revision = %q, want %q", info.Revision, want)
	}
}

func TestReadNotRepository(t *testing.T) {
	if _, err := Read(t.TempDir()); err == nil || !strings.Contains(err.Error(), ErrNotRepository.Error()) {
		t.Fatalf("err = %v, want ErrNotRepository", err)
	}
}

func TestStripCredentials(t *testing.T) {
	for in, want := range map[string]string{
		"https://u:p@host/x.git":    "https://host/x.git",
		"https://token@host/x.git":  "https://host/x.git",
		"ssh://git:pw@host/x.git":   "ssh://git@host/x.git",
		"git@github.com:acme/x.git": "git@github.com:acme/x.git",
		"https://host/x.git":        "https://host/x.git",
	} {
		if got := StripCredentials(in); got != want {
			t.Errorf("StripCredentials(%q) = %q, want %q", in, got, want)
		}
	}
}
