package testenv

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// DefaultGitOrigin is the origin remote GitRepo sets. It carries
// credentials on purpose: berth must redact them wherever it shows the URL.
const DefaultGitOrigin = "https://user:secret@git.example.com/acme/fleet.git"

// DefaultGitTime is the author and committer time of GitRepo's commit.
var DefaultGitTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// GitOptions shape the commits GitRepoWith and GitCommitAll make. Zero
// fields take the defaults.
type GitOptions struct {
	// Time is the author and committer time; default DefaultGitTime.
	Time time.Time
	// Origin is the URL of the "origin" remote (GitRepoWith only); default
	// DefaultGitOrigin.
	Origin string
	// NoOrigin makes a repository without an "origin" remote.
	NoOrigin bool
	// Branch is the branch to commit on (GitRepoWith only); default "main".
	Branch string
	// Message is the commit message; default "berth testenv commit".
	Message string
	// AuthorName and AuthorEmail name author and committer; default
	// "Berth Test" <test@berth.invalid>.
	AuthorName, AuthorEmail string
}

func (o GitOptions) withDefaults() GitOptions {
	if o.Time.IsZero() {
		o.Time = DefaultGitTime
	}
	if o.Origin == "" {
		o.Origin = DefaultGitOrigin
	}
	if o.Branch == "" {
		o.Branch = "main"
	}
	if o.Message == "" {
		o.Message = "berth testenv commit"
	}
	if o.AuthorName == "" {
		o.AuthorName = "Berth Test"
	}
	if o.AuthorEmail == "" {
		o.AuthorEmail = "test@berth.invalid"
	}
	return o
}

// GitRepo copies srcDir (without any .git in it) into a fresh temp dir,
// makes it a Git repository on branch "main" with one commit of everything
// at DefaultGitTime and origin DefaultGitOrigin, and returns the repository
// dir. The same srcDir gives the same commit hash every time.
func GitRepo(t testing.TB, srcDir string) string {
	t.Helper()
	return GitRepoWith(t, srcDir, GitOptions{})
}

// GitRepoWith is GitRepo with options.
func GitRepoWith(t testing.TB, srcDir string, opts GitOptions) string {
	t.Helper()
	opts = opts.withDefaults()
	dir := t.TempDir()
	if err := CopyDir(srcDir, dir); err != nil {
		t.Fatalf("testenv: copy %s: %v", srcDir, err)
	}
	repo, err := git.PlainInitWithOptions(dir, &git.PlainInitOptions{
		InitOptions: git.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName(opts.Branch)},
	})
	if err != nil {
		t.Fatalf("testenv: git init %s: %v", dir, err)
	}
	if !opts.NoOrigin {
		if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{opts.Origin}}); err != nil {
			t.Fatalf("testenv: git remote add origin: %v", err)
		}
	}
	commitAll(t, repo, dir, opts)
	return dir
}

// GitCommitAll stages every change in repoDir (new, modified and deleted
// files) and commits it with opts (Time, Message, author), even when
// nothing changed. It returns the new commit's hash.
func GitCommitAll(t testing.TB, repoDir string, opts GitOptions) string {
	t.Helper()
	repo, err := git.PlainOpen(repoDir)
	if err != nil {
		t.Fatalf("testenv: open Git repository %s: %v", repoDir, err)
	}
	return commitAll(t, repo, repoDir, opts.withDefaults())
}

func commitAll(t testing.TB, repo *git.Repository, dir string, opts GitOptions) string {
	t.Helper()
	wt, err := repo.Worktree()
	if err != nil {
		t.Fatalf("testenv: worktree of %s: %v", dir, err)
	}
	if err := wt.AddWithOptions(&git.AddOptions{All: true}); err != nil {
		t.Fatalf("testenv: git add --all in %s: %v", dir, err)
	}
	sig := &object.Signature{Name: opts.AuthorName, Email: opts.AuthorEmail, When: opts.Time}
	hash, err := wt.Commit(opts.Message, &git.CommitOptions{
		All:               true,
		AllowEmptyCommits: true,
		Author:            sig,
		Committer:         sig,
	})
	if err != nil {
		t.Fatalf("testenv: git commit in %s: %v", dir, err)
	}
	return hash.String()
}

// GitHead returns the hash of the commit HEAD points to in repoDir.
func GitHead(t testing.TB, repoDir string) string {
	t.Helper()
	repo, err := git.PlainOpen(repoDir)
	if err != nil {
		t.Fatalf("testenv: open Git repository %s: %v", repoDir, err)
	}
	head, err := repo.Head()
	if err != nil {
		t.Fatalf("testenv: HEAD of %s: %v", repoDir, err)
	}
	return head.Hash().String()
}

// CloneRepo clones the repository at repoDir into a fresh temp dir (another
// absolute path) and returns it. The clone's origin is set to repoDir's
// origin URL, so that both describe the same source; without an origin in
// repoDir, the clone's origin is repoDir.
func CloneRepo(t testing.TB, repoDir string) string {
	t.Helper()
	src, err := git.PlainOpen(repoDir)
	if err != nil {
		t.Fatalf("testenv: open Git repository %s: %v", repoDir, err)
	}
	dst := t.TempDir()
	clone, err := git.PlainClone(dst, false, &git.CloneOptions{URL: repoDir})
	if err != nil {
		t.Fatalf("testenv: git clone %s: %v", repoDir, err)
	}
	origin, err := src.Remote("origin")
	switch {
	case errors.Is(err, git.ErrRemoteNotFound):
		return dst
	case err != nil:
		t.Fatalf("testenv: origin of %s: %v", repoDir, err)
	}
	if err := clone.DeleteRemote("origin"); err != nil {
		t.Fatalf("testenv: reset origin of clone %s: %v", dst, err)
	}
	if _, err := clone.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: origin.Config().URLs}); err != nil {
		t.Fatalf("testenv: reset origin of clone %s: %v", dst, err)
	}
	return dst
}

// CopyDir copies the tree at src into dst (which may exist): directories,
// regular files with their permission bits, and symbolic links as links.
// A .git directory at the top of src is left out. Other file types are an
// error.
func CopyDir(src, dst string) error {
	src = filepath.Clean(src)
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if rel == ".git" && d.IsDir() {
			return filepath.SkipDir
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch mode := info.Mode(); {
		case mode.IsDir():
			return os.MkdirAll(target, 0o755)
		case mode.IsRegular():
			return copyFile(path, target, mode.Perm())
		case mode&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		default:
			return fmt.Errorf("%s: cannot copy a file of type %s", path, mode.Type())
		}
	})
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, perm) // not subject to the umask
}
