package testenv

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
)

func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestGitRepo(t *testing.T) {
	src := writeTree(t, map[string]string{
		"berth.yaml":               "apiVersion: berth.dev/v1\nkind: DeviceState\n",
		"apps/web/compose.yaml":    "services: {}\n",
		".git/config":              "not copied",
		"apps/web/scripts/run.sh":  "#!/bin/sh\n",
		"apps/metrics/values.yaml": "replicas: 1\n",
	})
	if err := os.Chmod(filepath.Join(src, "apps/web/scripts/run.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("compose.yaml", filepath.Join(src, "apps/web/link.yaml")); err != nil {
		t.Fatal(err)
	}

	a := GitRepo(t, src)
	b := GitRepo(t, src)
	if a == b || a == src {
		t.Fatalf("repos %s and %s from %s", a, b, src)
	}
	head := GitHead(t, a)
	if got := GitHead(t, b); got != head {
		t.Errorf("same tree, same time: heads %s and %s differ", head, got)
	}

	repo, err := git.PlainOpen(a)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := repo.Head()
	if err != nil {
		t.Fatal(err)
	}
	if ref.Name().Short() != "main" {
		t.Errorf("branch = %s, want main", ref.Name().Short())
	}
	commit, err := repo.CommitObject(ref.Hash())
	if err != nil {
		t.Fatal(err)
	}
	if !commit.Author.When.Equal(DefaultGitTime) || !commit.Committer.When.Equal(DefaultGitTime) {
		t.Errorf("commit times %v / %v, want %v", commit.Author.When, commit.Committer.When, DefaultGitTime)
	}
	origin, err := repo.Remote("origin")
	if err != nil {
		t.Fatal(err)
	}
	if urls := origin.Config().URLs; len(urls) != 1 || urls[0] != DefaultGitOrigin {
		t.Errorf("origin = %v", urls)
	}
	wt, err := repo.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	status, err := wt.Status()
	if err != nil {
		t.Fatal(err)
	}
	if !status.IsClean() {
		t.Errorf("worktree not clean after commit:\n%s", status)
	}
	tree, err := commit.Tree()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"berth.yaml", "apps/web/compose.yaml", "apps/web/link.yaml", "apps/web/scripts/run.sh"} {
		if _, err := tree.File(name); err != nil {
			t.Errorf("%s not committed: %v", name, err)
		}
	}
	if _, err := tree.File(".git/config"); err == nil {
		t.Error("the source's .git was copied")
	}
	if f, _ := tree.File("apps/web/scripts/run.sh"); f != nil && f.Mode.String() != "0100755" {
		t.Errorf("run.sh mode %s, want executable", f.Mode)
	}

	// Options.
	when := time.Date(2027, 3, 4, 5, 6, 7, 0, time.UTC)
	c := GitRepoWith(t, src, GitOptions{Time: when, Origin: "https://example.com/x.git", Branch: "release"})
	if GitHead(t, c) == head {
		t.Error("another time gives the same commit")
	}
	repo, _ = git.PlainOpen(c)
	ref, _ = repo.Head()
	if ref.Name().Short() != "release" {
		t.Errorf("branch = %s", ref.Name().Short())
	}
	origin, _ = repo.Remote("origin")
	if origin.Config().URLs[0] != "https://example.com/x.git" {
		t.Errorf("origin = %v", origin.Config().URLs)
	}
	d := GitRepoWith(t, src, GitOptions{NoOrigin: true})
	repo, _ = git.PlainOpen(d)
	if _, err := repo.Remote("origin"); err != git.ErrRemoteNotFound {
		t.Errorf("NoOrigin: origin err = %v", err)
	}
}

func TestGitCommitAll(t *testing.T) {
	repoDir := GitRepo(t, writeTree(t, map[string]string{"a.txt": "a\n", "b.txt": "b\n"}))
	first := GitHead(t, repoDir)
	if err := os.Remove(filepath.Join(repoDir, "a.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repoDir, "b.txt"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repoDir, "c.txt"), []byte("c\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	second := GitCommitAll(t, repoDir, GitOptions{Time: DefaultGitTime.Add(time.Hour), Message: "second"})
	if second == first || GitHead(t, repoDir) != second {
		t.Fatalf("first %s, second %s, head %s", first, second, GitHead(t, repoDir))
	}
	repo, _ := git.PlainOpen(repoDir)
	commit, err := repo.CommitObject(plumbing.NewHash(second))
	if err != nil {
		t.Fatal(err)
	}
	if commit.Message != "second" || len(commit.ParentHashes) != 1 || commit.ParentHashes[0].String() != first {
		t.Errorf("commit %+v", commit)
	}
	tree, _ := commit.Tree()
	if _, err := tree.File("a.txt"); err == nil {
		t.Error("deleted a.txt still in the tree")
	}
	if f, err := tree.File("b.txt"); err != nil {
		t.Error(err)
	} else if s, _ := f.Contents(); s != "changed\n" {
		t.Errorf("b.txt = %q", s)
	}
	if _, err := tree.File("c.txt"); err != nil {
		t.Errorf("new c.txt not committed: %v", err)
	}
}

func TestCloneRepo(t *testing.T) {
	repoDir := GitRepo(t, writeTree(t, map[string]string{"berth.yaml": "kind: DeviceState\n", "apps/x/compose.yaml": "services: {}\n"}))
	clone := CloneRepo(t, repoDir)
	if clone == repoDir {
		t.Fatal("clone in the same dir")
	}
	if GitHead(t, clone) != GitHead(t, repoDir) {
		t.Errorf("clone HEAD %s, source %s", GitHead(t, clone), GitHead(t, repoDir))
	}
	data, err := os.ReadFile(filepath.Join(clone, "apps/x/compose.yaml"))
	if err != nil || string(data) != "services: {}\n" {
		t.Errorf("checked-out file: %q, %v", data, err)
	}
	repo, _ := git.PlainOpen(clone)
	origin, err := repo.Remote("origin")
	if err != nil {
		t.Fatal(err)
	}
	if urls := origin.Config().URLs; len(urls) != 1 || urls[0] != DefaultGitOrigin {
		t.Errorf("clone origin = %v, want the source's %s", urls, DefaultGitOrigin)
	}
	ref, _ := repo.Head()
	if ref.Name().Short() != "main" {
		t.Errorf("clone branch = %s", ref.Name().Short())
	}

	bare := GitRepoWith(t, t.TempDir(), GitOptions{NoOrigin: true})
	clone = CloneRepo(t, bare)
	repo, _ = git.PlainOpen(clone)
	origin, err = repo.Remote("origin")
	if err != nil || origin.Config().URLs[0] != bare {
		t.Errorf("clone of a repo without origin: origin %v, %v", origin, err)
	}
}

func TestCopyDirDevices(t *testing.T) {
	dst := t.TempDir()
	src := t.TempDir()
	if err := os.Symlink("/dev/null", filepath.Join(src, "null")); err != nil {
		t.Fatal(err)
	}
	if err := CopyDir(src, dst); err != nil {
		t.Fatalf("a symlink to a device is copied as a link: %v", err)
	}
	if link, err := os.Readlink(filepath.Join(dst, "null")); err != nil || link != "/dev/null" {
		t.Errorf("link = %q, %v", link, err)
	}
	if err := CopyDir("/dev/null", t.TempDir()); err == nil {
		t.Error("copied a device file")
	}
}
