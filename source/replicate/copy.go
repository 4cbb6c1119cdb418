package replicate

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync/atomic"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/berth-dev/berth/source/oci"
)

// Copying one digest to one target: its graph, its referrers and its
// legacy signature tags, then its tags, reading the upstream through
// verifying readers.

// syncDigest makes every tag of g point at g's digest at the target, with
// its graph, referrers and legacy signature tags.
func (s *Syncer) syncDigest(ctx context.Context, src *remote.Repository, srcName string, dst *remote.Repository, dstName string, g *group, st *passState) []Item {
	ctx, cancel := s.step(ctx)
	defer cancel()
	fail := func(what string, err error) []Item {
		return failAll(srcName, dstName, g, failure(ErrCopy, what, err))
	}
	var move []string // tags that do not point at the digest yet
	present := false
	for _, t := range g.tags {
		d, err := dst.Resolve(ctx, t)
		switch {
		case err == nil && d.Digest == g.desc.Digest:
			present = true
		case err == nil || isNotFound(err):
			move = append(move, t)
		default:
			return fail("resolve "+dstName+":"+t, err)
		}
	}
	complete := false
	if present {
		var err error
		if complete, err = signaturesPresent(ctx, dst, g.desc, g.sigs); err != nil {
			return fail(fmt.Sprintf("check the signatures of %s@%s", dstName, g.desc.Digest), err)
		}
	}
	var bytes atomic.Int64
	copyOpts := oras.CopyGraphOptions{
		PostCopy: func(_ context.Context, d ocispec.Descriptor) error {
			bytes.Add(d.Size)
			st.bytes.Add(d.Size)
			st.report()
			return nil
		},
	}
	vsrc := verifiedSource{src}
	if !complete {
		opts := oras.ExtendedCopyGraphOptions{
			CopyGraphOptions: copyOpts,
			FindPredecessors: func(ctx context.Context, from content.ReadOnlyGraphStorage, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
				if d.Digest == g.desc.Digest {
					return g.sigs.referrers, nil // listed once per pass
				}
				return from.Predecessors(ctx, d)
			},
		}
		if err := oras.ExtendedCopyGraph(ctx, vsrc, dst, g.desc, opts); err != nil {
			return fail(fmt.Sprintf("copy %s@%s to %s", srcName, g.desc.Digest, dstName), err)
		}
		if err := reindex(ctx, vsrc, dst, g.desc, g.sigs.referrers); err != nil {
			return fail(fmt.Sprintf("index the referrers of %s@%s", dstName, g.desc.Digest), err)
		}
		for _, lt := range g.sigs.legacy {
			d, err := dst.Resolve(ctx, lt.tag)
			switch {
			case err == nil && d.Digest == lt.desc.Digest:
				continue
			case err != nil && !isNotFound(err):
				return fail("resolve "+dstName+":"+lt.tag, err)
			}
			if err := oras.CopyGraph(ctx, vsrc, dst, lt.desc, copyOpts); err != nil {
				return fail(fmt.Sprintf("copy %s:%s to %s", srcName, lt.tag, dstName), err)
			}
			if err := dst.Tag(ctx, lt.desc, lt.tag); err != nil {
				return fail(fmt.Sprintf("tag %s:%s", dstName, lt.tag), err)
			}
		}
	}
	// The tags last: whoever follows them finds the content and its
	// signatures already there.
	for _, t := range move {
		if err := dst.Tag(ctx, g.desc, t); err != nil {
			return fail(fmt.Sprintf("tag %s:%s", dstName, t), err)
		}
	}
	items := make([]Item, len(g.tags))
	first := true
	for i, t := range g.tags {
		it := Item{Source: srcName + ":" + t, Target: dstName + ":" + t, Digest: g.desc.Digest.String(), Status: StatusUpToDate}
		if !complete || slices.Contains(move, t) {
			it.Status = StatusCopied
			if first {
				it.Bytes, first = bytes.Load(), false
			}
		}
		items[i] = it
	}
	return items
}

// reindex pushes again the referrers of desc that the target has as
// manifests but does not list as referrers: a copy interrupted between
// the manifest and the update of the sha256-<hex> fallback index (or two
// updates racing) leaves them so, and the copy skips manifests that exist.
// Pushing a manifest again is idempotent; it makes the target index it (a
// registry with the referrers API) or oras-go update the fallback index.
func reindex(ctx context.Context, src content.ReadOnlyStorage, dst *remote.Repository, desc ocispec.Descriptor, referrers []ocispec.Descriptor) error {
	if len(referrers) == 0 {
		return nil
	}
	have, err := targetReferrers(ctx, dst, desc)
	if err != nil {
		return err
	}
	for _, r := range referrers {
		if have[r.Digest.String()] {
			continue
		}
		rc, err := src.Fetch(ctx, r)
		if err != nil {
			return fmt.Errorf("fetch referrer %s: %w", r.Digest, err)
		}
		err = dst.Push(ctx, r, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("push referrer %s: %w", r.Digest, err)
		}
	}
	return nil
}

// targetReferrers returns the digests dst lists as referrers of desc.
func targetReferrers(ctx context.Context, dst *remote.Repository, desc ocispec.Descriptor) (map[string]bool, error) {
	have := map[string]bool{}
	err := dst.Referrers(ctx, desc, "", func(rs []ocispec.Descriptor) error {
		for _, r := range rs {
			have[r.Digest.String()] = true
		}
		return nil
	})
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("list referrers: %w", err)
	}
	return have, nil
}

// signaturesPresent reports whether every referrer and legacy signature
// tag of desc upstream is at dst too.
func signaturesPresent(ctx context.Context, dst *remote.Repository, desc ocispec.Descriptor, sg *signatures) (bool, error) {
	if len(sg.referrers) > 0 {
		have, err := targetReferrers(ctx, dst, desc)
		if err != nil {
			return false, err
		}
		for _, r := range sg.referrers {
			if !have[r.Digest.String()] {
				return false, nil
			}
		}
	}
	for _, lt := range sg.legacy {
		d, err := dst.Resolve(ctx, lt.tag)
		switch {
		case isNotFound(err):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("resolve %s: %w", lt.tag, err)
		case d.Digest != lt.desc.Digest:
			return false, nil
		}
	}
	return true, nil
}

// verifiedSource reads from an upstream repository through readers that
// check the size and digest of what they stream: a byte the upstream
// altered fails the copy before the target commits it.
type verifiedSource struct{ *remote.Repository }

type verifiedReader struct {
	vr *content.VerifyReader
	c  io.Closer
}

func (r *verifiedReader) Read(p []byte) (int, error) {
	n, err := r.vr.Read(p)
	if err == io.EOF {
		if verr := r.vr.Verify(); verr != nil {
			return n, fmt.Errorf("%w: %v", oci.ErrDigestMismatch, verr)
		}
	}
	return n, err
}

func (r *verifiedReader) Close() error { return r.c.Close() }
