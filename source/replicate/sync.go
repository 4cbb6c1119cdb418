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
	"oras.land/oras-go/v2/content"

	"github.com/berth-dev/berth/source/selector"
)

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

var _ content.ReadOnlyGraphStorage = verifiedSource{}

// Fetch returns a reader of desc that fails at its end unless the content
// matches desc.
func (v verifiedSource) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	rc, err := v.Repository.Fetch(ctx, desc)
	if err != nil {
		return nil, err
	}
	return &verifiedReader{vr: content.NewVerifyReader(rc, desc), c: rc}, nil
}
