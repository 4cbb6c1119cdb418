package replicate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/source/selector"
)

// legacySuffixes are the tags cosign writes next to an artifact in its
// classic format, sha256-<hex><suffix>: signatures, attestations, SBOMs.
var legacySuffixes = []string{".sig", ".att", ".sbom"}

// Options configure a Syncer.
type Options struct {
	// Log receives what each pass does; nil discards it.
	Log *slog.Logger
	// Timeout bounds listing one upstream repository's tags and syncing
	// one digest to one target; 0: no bound but ctx.
	Timeout time.Duration
	// Progress, when set, is called as items are done and bytes copied. It
	// is called from several goroutines and must be quick.
	Progress func(Progress)
}

// Progress is how far a pass is.
type Progress struct {
	// Done and Total count the items (tag to target) of the pass: Total
	// grows as jobs select their tags.
	Done, Total int64
	// Bytes is what the pass has copied so far.
	Bytes int64
}

// Syncer runs the jobs of a configuration. It is safe for concurrent use,
// though passes are meant to run one at a time.
type Syncer struct {
	cfg       *Config
	open      Opener
	opts      Options
	log       *slog.Logger
	routes    []Route
	level     []int
	feed      [][]int
	selectors []*selector.Selector // by job; nil with explicit tags
	copies    chan struct{}        // bounds the copies in flight
}

// New checks cfg (as Parse returns it) and returns a Syncer that reaches
// registries through open.
func New(cfg *Config, open Opener, opts Options) (*Syncer, error) {
	s := &Syncer{cfg: cfg, open: open, opts: opts, log: opts.Log}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Jobs) == 0 {
		return nil, errors.New("mirror configuration: no job")
	}
	for _, j := range cfg.Jobs {
		var sel *selector.Selector
		if pol, ok := j.Policy(); ok {
			var err error
			if sel, err = selector.New(pol); err != nil {
				return nil, fmt.Errorf("job %q: %w", j.Name, err)
			}
		} else if len(j.Tags) == 0 {
			return nil, fmt.Errorf("job %q selects no tag", j.Name)
		}
		s.selectors = append(s.selectors, sel)
	}
	s.routes = cfg.Routes()
	if cyc := cycle(s.routes); cyc != nil {
		return nil, fmt.Errorf("%w: %s is fed back by job %q", ErrCycle, cyc[0].Source, cfg.Jobs[cyc[len(cyc)-1].Job].Name)
	}
	s.level = levels(s.routes)
	s.feed = feeders(s.routes)
	s.copies = make(chan struct{}, max(cfg.Concurrency, 1))
	return s, nil
}

// step bounds one operation by Options.Timeout.
func (s *Syncer) step(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.opts.Timeout > 0 {
		return context.WithTimeout(ctx, s.opts.Timeout)
	}
	return context.WithCancel(ctx)
}

// Once runs one pass over every job.
func (s *Syncer) Once(ctx context.Context) *Report {
	due := make([]bool, len(s.cfg.Jobs))
	for i := range due {
		due[i] = true
	}
	return s.pass(ctx, due)
}

// Run runs each job every its interval until ctx is done, and calls report
// after each pass (from this goroutine). A pass runs the jobs that are due,
// plus the jobs fed by a job that has just copied something, so that
// replicas follow at once. It returns nil when ctx is done.
func (s *Syncer) Run(ctx context.Context, report func(*Report)) error {
	interval := func(i int) time.Duration {
		for _, d := range []time.Duration{s.cfg.Jobs[i].Interval, s.cfg.Interval} {
			if d > 0 {
				return d
			}
		}
		return DefaultInterval
	}
	next := make([]time.Time, len(s.cfg.Jobs)) // zero: due now
	for {
		now := time.Now()
		due := make([]bool, len(next))
		anyDue := false
		for i, t := range next {
			if !t.After(now) {
				due[i], anyDue = true, true
			}
		}
		if anyDue {
			rep := s.pass(ctx, due)
			if ctx.Err() != nil {
				return nil
			}
			if report != nil {
				report(rep)
			}
			done := time.Now()
			for i := range due {
				if due[i] {
					next[i] = done.Add(interval(i))
				}
			}
		}
		wake := next[0]
		for _, t := range next[1:] {
			if t.Before(wake) {
				wake = t
			}
		}
		timer := time.NewTimer(time.Until(wake))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
	}
}

// passState is what a pass shares between its goroutines.
type passState struct {
	done, total, bytes atomic.Int64
	progress           func(Progress)
}

func (p *passState) report() {
	if p.progress != nil {
		p.progress(Progress{Done: p.done.Load(), Total: p.total.Load(), Bytes: p.bytes.Load()})
	}
}

// routeResult is what syncing one route did.
type routeResult struct {
	listed, selected int
	items            []Item
	errs             []error // one per failed item
	upstream         error   // the upstream could not be read
	warning          string
	copied           bool
}

// pass runs the due jobs, level by level, and the jobs fed by a route that
// copied something.
func (s *Syncer) pass(ctx context.Context, due []bool) *Report {
	start := time.Now()
	st := &passState{progress: s.opts.Progress}
	results := make([]routeResult, len(s.routes))
	ran := make([]bool, len(s.routes))
	routesAt := map[int][]int{}
	top := 0
	for i, l := range s.level {
		routesAt[l] = append(routesAt[l], i)
		top = max(top, l)
	}
	slots := make(chan struct{}, max(s.cfg.Concurrency, 1))
	for l := 0; l <= top; l++ {
		var wg sync.WaitGroup
		for _, i := range routesAt[l] {
			run := due[s.routes[i].Job]
			for _, q := range s.feed[i] {
				run = run || ran[q] && results[q].copied
			}
			if !run {
				continue
			}
			ran[i] = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case slots <- struct{}{}:
				case <-ctx.Done():
					results[i].upstream = failure(ErrUpstream, "sync "+s.routes[i].Source, ctx.Err())
					return
				}
				defer func() { <-slots }()
				s.syncRoute(ctx, s.routes[i], &results[i], st)
			}()
		}
		wg.Wait()
	}

	rep := &Report{Started: start}
	jobs := map[int]*JobReport{}
	var order []int
	for i, r := range s.routes {
		if !ran[i] {
			continue
		}
		jr := jobs[r.Job]
		if jr == nil {
			jr = &JobReport{Name: s.cfg.Jobs[r.Job].Name, Items: []Item{}}
			jobs[r.Job] = jr
			order = append(order, r.Job)
		}
		res := &results[i]
		jr.Listed += res.listed
		jr.Selected += res.selected
		if res.upstream != nil {
			jr.Errors = append(jr.Errors, res.upstream.Error())
			rep.errs = append(rep.errs, res.upstream)
		}
		if res.warning != "" {
			jr.Warnings = append(jr.Warnings, res.warning)
		}
		for _, it := range res.items {
			switch it.Status {
			case StatusCopied:
				jr.Copied++
			case StatusUpToDate:
				jr.UpToDate++
			default:
				jr.Failed++
			}
			jr.Bytes += it.Bytes
			jr.Items = append(jr.Items, it)
		}
		rep.errs = append(rep.errs, res.errs...)
	}
	slices.Sort(order)
	for _, j := range order {
		jr := jobs[j]
		rep.Copied += jr.Copied
		rep.UpToDate += jr.UpToDate
		rep.Failed += jr.Failed
		rep.Bytes += jr.Bytes
		rep.Jobs = append(rep.Jobs, *jr)
	}
	rep.Seconds = time.Since(start).Seconds()
	s.log.Info("mirror pass done", "jobs", len(rep.Jobs), "copied", rep.Copied, "upToDate", rep.UpToDate,
		"failed", rep.Failed, "bytes", rep.Bytes, "seconds", rep.Seconds)
	return rep
}

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

// syncRoute syncs one upstream repository to its targets.
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
			res.upstream = failure(ErrUpstream, "resolve "+r.Source+":"+tag, err)
			log.Error("upstream unavailable, targets left as they are", "err", res.upstream)
			return
		}
		g := byDigest[descs[i].Digest.String()]
		if g == nil {
			g = &group{desc: descs[i]}
			byDigest[descs[i].Digest.String()] = g
			groups = append(groups, g)
		}
		g.tags = append(g.tags, tag)
	}
	s.each(len(groups), func(i int) {
		g := groups[i]
		sctx, cancel := s.step(ctx)
		defer cancel()
		g.sigs, g.err = upstreamSignatures(sctx, src, g.desc)
		if g.err != nil {
			g.err = failure(ErrUpstream, fmt.Sprintf("read the signatures of %s@%s", r.Source, g.desc.Digest), g.err)
		}
	})

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

// each calls fn for 0..n-1 on at most Concurrency goroutines.
func (s *Syncer) each(n int, fn func(i int)) {
	limit := make(chan struct{}, max(s.cfg.Concurrency, 1))
	var wg sync.WaitGroup
	for i := range n {
		limit <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-limit; wg.Done() }()
			fn(i)
		}()
	}
	wg.Wait()
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

var _ content.ReadOnlyGraphStorage = verifiedSource{}

// Fetch returns a reader of desc that fails at its end unless the content
// matches desc.
func (v verifiedSource) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	rc, err := v.Repository.Fetch(ctx, desc)
	if err != nil {
		return nil, err
	}
	return &verifiedReader{vr: content.NewVerifyReader(rc, desc), c: rc, desc: desc}, nil
}

type verifiedReader struct {
	vr   *content.VerifyReader
	c    io.Closer
	desc ocispec.Descriptor
}

// Read fails at the end unless the content matches; a short or broken body
// is a transport failure, not a mismatch (see oci.ReadError).
func (r *verifiedReader) Read(p []byte) (int, error) {
	n, err := r.vr.Read(p)
	if err == io.EOF {
		err = r.vr.Verify()
		if err == nil {
			return n, io.EOF
		}
	}
	if err != nil {
		return n, oci.ReadError(string(r.desc.Digest), r.desc, err)
	}
	return n, nil
}

func (r *verifiedReader) Close() error { return r.c.Close() }
