// Package provenance reads where an artifact comes from out of the Git
// repository that holds its folder: the origin URL (credentials stripped),
// the revision and the commit time. It uses go-git, no git binary.
package provenance

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
)

// ErrNotRepository is returned when the folder is not inside a Git work tree.
var ErrNotRepository = errors.New("not in a Git repository")

// ErrDirty is returned when the folder has uncommitted changes.
var ErrDirty = errors.New("uncommitted changes")

// Info is the provenance of a folder at HEAD.
type Info struct {
	// Source is the origin remote's URL without credentials, or "" when the
	// repository has no origin.
	Source string
	// Revision is "<branch or tag>@sha1:<commit>", or "sha1:<commit>" on a
	// detached HEAD no tag points at.
	Revision string
	// Commit is the full commit hash.
	Commit string
	// Created is the commit (committer) time in UTC.
	Created time.Time
	// Dirty lists the paths under the folder that differ from HEAD.
	Dirty []string
}

// Read returns the provenance of dir, which must be inside a Git work tree.
func Read(dir string) (Info, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Info{}, err
	}
	repo, err := git.PlainOpenWithOptions(abs, &git.PlainOpenOptions{DetectDotGit: true, EnableDotGitCommonDir: true})
	if errors.Is(err, git.ErrRepositoryNotExists) {
		return Info{}, fmt.Errorf("%w: %s (push from a Git checkout, or use `berth build`)", ErrNotRepository, dir)
	}
	if err != nil {
		return Info{}, fmt.Errorf("open Git repository at %s: %w", dir, err)
	}
	head, err := repo.Head()
	if err != nil {
		return Info{}, fmt.Errorf("read HEAD of the repository at %s (has anything been committed?): %w", dir, err)
	}
	commit, err := repo.CommitObject(head.Hash())
	if err != nil {
		return Info{}, fmt.Errorf("read commit %s: %w", head.Hash(), err)
	}
	info := Info{
		Commit:  head.Hash().String(),
		Created: commit.Committer.When.UTC().Truncate(time.Second),
	}
	info.Revision = revision(repo, head)
	if remote, err := repo.Remote("origin"); err == nil && len(remote.Config().URLs) > 0 {
		info.Source = StripCredentials(remote.Config().URLs[0])
	}
	wt, err := repo.Worktree()
	if err != nil {
		return Info{}, fmt.Errorf("open work tree of %s: %w", dir, err)
	}
	rel, err := filepath.Rel(wt.Filesystem.Root(), abs)
	if err != nil {
		return Info{}, err
	}
	rel = filepath.ToSlash(rel)
	status, err := wt.Status()
	if err != nil {
		return Info{}, fmt.Errorf("read status of %s: %w", dir, err)
	}
	for p, s := range status {
		if s.Worktree == git.Unmodified && s.Staging == git.Unmodified {
			continue
		}
		if rel == "." || p == rel || strings.HasPrefix(p, rel+"/") {
			info.Dirty = append(info.Dirty, p)
		}
	}
	slices.Sort(info.Dirty)
	return info, nil
}

// revision names HEAD the way Flux does: branch@sha1:hash, else a tag
// pointing at HEAD, else sha1:hash.
func revision(repo *git.Repository, head *plumbing.Reference) string {
	h := head.Hash().String()
	if head.Name().IsBranch() {
		return head.Name().Short() + "@sha1:" + h
	}
	var tags []string
	if iter, err := repo.Tags(); err == nil {
		_ = iter.ForEach(func(r *plumbing.Reference) error {
			target := r.Hash()
			if t, err := repo.TagObject(target); err == nil {
				target = t.Target
			}
			if target == head.Hash() {
				tags = append(tags, r.Name().Short())
			}
			return nil
		})
	}
	if len(tags) > 0 {
		slices.Sort(tags)
		return tags[0] + "@sha1:" + h
	}
	return "sha1:" + h
}

// StripCredentials removes a user name and password from a remote URL.
// scp-like addresses (git@host:path) are returned unchanged.
func StripCredentials(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return raw
	}
	if u.User != nil && u.Scheme != "ssh" {
		u.User = nil
	} else if u.User != nil {
		u.User = url.User(u.User.Username())
	}
	return u.String()
}
