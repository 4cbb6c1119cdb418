package replicate

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/berth-dev/berth/source/oci"
)

// Syncing one route: one upstream repository to its targets. Its tags are
// selected and resolved upstream, grouped by digest, and each digest is
// copied to each target (copy.go).

// legacySuffixes are the tags cosign writes next to an artifact in its
// classic format, sha256-<hex><suffix>: signatures, attestations, SBOMs.
var legacySuffixes = []string{".sig", ".att", ".sbom"}

// group is the tags of one route that point at one digest upstream.
type group struct {
	desc ocispec.Descriptor
	tags []string
	sigs *signatures
	err  error // reading its signatures failed
}

// signatures are what hangs off a digest upstream.
type signatures struct {
	referrers []ocispec.Descriptor
	legacy    []legacyTag
}

type legacyTag struct {
	tag  string
	desc ocispec.Descriptor
}

// syncRoute syncs one upstream repository to its targets, in steps:
// select the tags, resolve them upstream, read the signatures of each
// digest, copy each digest to each target, and record what was done.
func (s *Syncer) syncRoute(ctx context.Context, r Route, res *routeResult, st *passState) {
	job := s.cfg.Jobs[r.Job]
	log := s.log.With("job", job.Name, "source", r.Source)
	src, err := s.open.Repository(r.Source)
	if err != nil {
		res.upstream = failure(ErrUpstream, "open "+r.Source, err)
		log.Error("upstream unavailable, targets left as they are", "err", res.upstream)
		return
	}
	tags, err := s.selectTags(ctx, r, src, res)
	if err != nil {
		res.upstream = err
		log.Error("upstream unavailable, targets left as they are", "err", err)
		return
	}
	res.selected = len(tags)
	st.total.Add(int64(len(tags) * len(r.Targets)))
	st.report()

	groups, err := s.resolveTags(ctx, r, src, tags, res, st, log)
	if err != nil {
		res.upstream = err
		log.Error("upstream unavailable, targets left as they are", "err", res.upstream)
		return
	}
	s.readSignatures(ctx, r, src, groups)
	out := s.copyGroups(ctx, r, src, groups, st)
	recordItems(out, res, log)
}

// resolveTags resolves every tag upstream and groups the tags by digest.
// A tag the upstream does not have fails at every target; any other
// failure is the upstream's: it discards the items recorded and returns
// the error, and nothing is written anywhere.
func (s *Syncer) resolveTags(ctx context.Context, r Route, src *remote.Repository, tags []string, res *routeResult, st *passState, log *slog.Logger) ([]*group, error) {
	// Resolve every tag upstream first: if the upstream cannot answer,
	// nothing is written anywhere.
	descs := make([]ocispec.Descriptor, len(tags))
	errs := make([]error, len(tags))
	s.each(len(tags), func(i int) {
		rctx, cancel := s.step(ctx)
		defer cancel()
		descs[i], errs[i] = src.Resolve(rctx, tags[i])
	})
	var groups []*group
	byDigest := map[string]*group{}
	for i, tag := range tags {
		switch err := errs[i]; {
		case err == nil:
		case isNotFound(err):
			e := &wrapErr{kind: ErrTagNotFound, msg: fmt.Sprintf("%s:%s: %v", r.Source, tag, ErrTagNotFound), err: err}
			for _, t := range r.Targets {
				res.items = append(res.items, Item{Source: r.Source + ":" + tag, Target: t + ":" + tag, Status: StatusFailed, Error: e.Error(), err: e})
				res.errs = append(res.errs, e)
			}
			st.done.Add(int64(len(r.Targets)))
			log.Error("tag not found at the upstream", "tag", tag)
			continue
		default:
			res.items = nil
			res.errs = nil
			return nil, failure(ErrUpstream, "resolve "+r.Source+":"+tag, err)
		}
		g := byDigest[descs[i].Digest.String()]
		if g == nil {
			g = &group{desc: descs[i]}
			byDigest[descs[i].Digest.String()] = g
			groups = append(groups, g)
		}
		g.tags = append(g.tags, tag)
	}
	return groups, nil
}

// readSignatures lists, for each group, what hangs off its digest
// upstream; a group whose signatures cannot be read fails at every target.
func (s *Syncer) readSignatures(ctx context.Context, r Route, src *remote.Repository, groups []*group) {
	s.each(len(groups), func(i int) {
		g := groups[i]
		sctx, cancel := s.step(ctx)
		defer cancel()
		g.sigs, g.err = upstreamSignatures(sctx, src, g.desc)
		if g.err != nil {
			g.err = failure(ErrUpstream, fmt.Sprintf("read the signatures of %s@%s", r.Source, g.desc.Digest), g.err)
		}
	})
}

// copyGroups syncs each group to each target of r, at most Concurrency
// copies in flight, and returns the items of each (group, target) pair.
func (s *Syncer) copyGroups(ctx context.Context, r Route, src *remote.Repository, groups []*group, st *passState) [][]Item {
	dsts := make([]*remote.Repository, len(r.Targets))
	dstErrs := make([]error, len(r.Targets))
	for i, t := range r.Targets {
		dsts[i], dstErrs[i] = s.open.Repository(t)
	}
	out := make([][]Item, len(groups)*len(r.Targets))
	s.each(len(out), func(k int) {
		g, ti := groups[k/len(r.Targets)], k%len(r.Targets)
		switch {
		case g.err != nil:
			out[k] = failAll(r.Source, r.Targets[ti], g, g.err)
		case dstErrs[ti] != nil:
			out[k] = failAll(r.Source, r.Targets[ti], g, failure(ErrCopy, "open "+r.Targets[ti], dstErrs[ti]))
		default:
			select {
			case s.copies <- struct{}{}:
				out[k] = s.syncDigest(ctx, src, r.Source, dsts[ti], r.Targets[ti], g, st)
				<-s.copies
			case <-ctx.Done():
				out[k] = failAll(r.Source, r.Targets[ti], g, failure(ErrCopy, "copy to "+r.Targets[ti], ctx.Err()))
			}
		}
		st.done.Add(int64(len(out[k])))
		st.report()
	})
	return out
}

// recordItems logs the items of a route and adds them to res.
func recordItems(out [][]Item, res *routeResult, log *slog.Logger) {
	for _, items := range out {
		for _, it := range items {
			switch it.Status {
			case StatusCopied:
				res.copied = true
				log.Info("copied", "tag", it.Source, "target", it.Target, "digest", it.Digest, "bytes", it.Bytes)
			case StatusUpToDate:
				log.Debug("up to date", "tag", it.Source, "target", it.Target, "digest", it.Digest)
			default:
				log.Error("copy failed", "tag", it.Source, "target", it.Target, "digest", it.Digest, "err", it.Error)
				res.errs = append(res.errs, it.err)
			}
			res.items = append(res.items, it)
		}
	}
}

// selectTags returns the tags of the route's job to sync.
func (s *Syncer) selectTags(ctx context.Context, r Route, src *remote.Repository, res *routeResult) ([]string, error) {
	job := s.cfg.Jobs[r.Job]
	if len(job.Tags) > 0 {
		return job.Tags, nil
	}
	ctx, cancel := s.step(ctx)
	defer cancel()
	var all []string
	err := src.Tags(ctx, "", func(tags []string) error {
		for _, t := range tags {
			if !oci.IsSignatureTag(t) {
				all = append(all, t)
			}
		}
		return nil
	})
	if err != nil {
		return nil, failure(ErrUpstream, "list the tags of "+r.Source, err)
	}
	res.listed = len(all)
	sel := s.selectors[r.Job]
	var matched []string
	for _, t := range all {
		if _, err := sel.Select([]string{t}); err == nil {
			matched = append(matched, t)
		}
	}
	if len(matched) == 0 {
		_, err := sel.Select(all)
		res.warning = fmt.Sprintf("%s: %v", r.Source, err)
		s.log.Warn("no tag selected", "job", job.Name, "source", r.Source, "why", err)
		return nil, nil
	}
	if job.Latest > 0 && len(matched) > job.Latest {
		rest := slices.Clone(matched)
		keep := make([]string, 0, job.Latest)
		for len(keep) < job.Latest {
			pick, err := sel.Select(rest)
			if err != nil {
				break
			}
			keep = append(keep, pick.Tag)
			rest = slices.DeleteFunc(rest, func(t string) bool { return t == pick.Tag })
		}
		matched = keep
	}
	slices.Sort(matched)
	return matched, nil
}

// upstreamSignatures lists what hangs off desc upstream: its referrers and
// cosign's legacy tags.
func upstreamSignatures(ctx context.Context, src *remote.Repository, desc ocispec.Descriptor) (*signatures, error) {
	sg := &signatures{}
	err := src.Referrers(ctx, desc, "", func(rs []ocispec.Descriptor) error {
		sg.referrers = append(sg.referrers, rs...)
		return nil
	})
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("list referrers: %w", err)
	}
	for _, tag := range legacyTags(desc) {
		d, err := src.Resolve(ctx, tag)
		switch {
		case err == nil:
			sg.legacy = append(sg.legacy, legacyTag{tag: tag, desc: d})
		case !isNotFound(err):
			return nil, fmt.Errorf("resolve %s: %w", tag, err)
		}
	}
	return sg, nil
}

// legacyTags are the tags cosign's classic format would use for desc.
func legacyTags(desc ocispec.Descriptor) []string {
	base := desc.Digest.Algorithm().String() + "-" + desc.Digest.Encoded()
	out := make([]string, len(legacySuffixes))
	for i, sfx := range legacySuffixes {
		out[i] = base + sfx
	}
	return out
}

// failAll fails every tag of g to target.
func failAll(source, target string, g *group, err error) []Item {
	items := make([]Item, len(g.tags))
	for i, t := range g.tags {
		items[i] = Item{Source: source + ":" + t, Target: target + ":" + t, Digest: g.desc.Digest.String(), Status: StatusFailed, Error: err.Error(), err: err}
	}
	return items
}
