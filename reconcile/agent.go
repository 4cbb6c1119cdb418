package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/berth-dev/berth/internal/memtrim"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/policy/rollout"
	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/config"
	"github.com/berth-dev/berth/reconcile/metrics"
	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/mirror"
	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/source/selector"
	"github.com/berth-dev/berth/state"
)

// Agent reconciles every configured source.
type Agent struct {
	cfg      *config.Config
	store    *store.Store
	appliers []Applier
	metrics  *metrics.Metrics
	log      *slog.Logger
	version  string
	// device is who the device is, for the rollout plans of releases.
	device rollout.Device
	// now is the agent's clock: every decision (rollout waves, statement
	// look-ups, update windows, inhibitors, backoff) reads it.
	now func() time.Time
	// trim hands memory back to the device (Options.Trim).
	trim func()

	// mirrors are the registry mirrors of the configuration (nil: none),
	// for every fetch of the sources and of the appliers.
	mirrors *mirror.Resolver

	mu      sync.Mutex // guards state, inUse and writes of state.json
	state   *store.State
	inUse   map[string]int // digests being extracted or switched in: kept by GC
	sources map[string]*source
	order   []string
	// pushClient reaches bundles.pushTo; nil without it.
	pushClient *oci.Client
	// limiter caps the downloads of the sources without a maxBandwidth of
	// their own (the global maxBandwidth); nil: no cap.
	limiter *rate.Limiter
	// margo is the Margo source (margo.go); nil without a margo block.
	margo *margoSource
}

var _ api.Agent = (*Agent)(nil)

// source is the runtime of one configured source.
type source struct {
	cfg      config.Source
	ref      oci.Reference // the repository, for a registry source
	policy   cosign.Policy
	selector *selector.Selector
	// remote is the delivery path of a registry source, through the
	// registry mirrors of the configuration; for a bundle source, only its
	// timeout and log (the bundle's own is made when it is opened).
	remote *deliver.Remote
	// file is the bundle file of a file:// source; "" for a registry.
	file string
	// bundleCache is what the last poll learnt of file (guarded by run).
	bundleCache *bundleCache
	// limiter caps the source's downloads (its maxBandwidth, else the
	// global one); nil: no cap.
	limiter *rate.Limiter

	run     sync.Mutex    // one reconcile at a time
	trigger chan struct{} // wakes the loop for an immediate reconcile
	// prefetched is the release the last attempt verified, extracted and
	// held back (guarded by run): while it waits, a poll that resolves to
	// it again does not fetch and verify its manifest and signature again.
	prefetched *prefetched
	// spread is the release whose verification and download wait for the
	// device's time in the spread of its rollout (guarded by run).
	spread *spreadHold
	// dirty is set (guarded by Agent.mu) when an attempt changed a release
	// record: state.json is written even for a quiet outcome.
	dirty bool

	mu          sync.Mutex // guards the fields below
	next        time.Time
	reconciling bool
	attempted   bool
}

// Options are what New needs besides the configuration.
type Options struct {
	Appliers []Applier
	Metrics  *metrics.Metrics
	Log      *slog.Logger
	Version  string
	// Now is the clock every decision reads (rollout waves, statement
	// look-ups, update windows, inhibitors, backoff); nil: time.Now. Tests
	// pass a fake one. The poll timers run on the real clock.
	Now func() time.Time
	// Trim hands memory back to the device after a poll that did work
	// (see trims); nil: memtrim.Trim. A simulation of many agents in one
	// process passes a no-op: they share one heap and one program, which a
	// device does not.
	Trim func()
}

// New opens the state folder, loads keys and trust roots, and prepares one
// registry client per source. It reaches no registry. Without a stable
// device id (device.id, else the machine id) it refuses to start: rollout
// plans place devices by id.
func New(cfg *config.Config, o Options) (*Agent, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	device, err := cfg.Device.Identity()
	if err != nil {
		return nil, fmt.Errorf("refusing to start: %w", err)
	}
	st, err := store.Open(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	state, err := store.ReadState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	for _, r := range st.Removed {
		o.Log.Warn("removed an incomplete revision left by a crash", "revision", r)
	}
	if removed, err := oci.CleanPartials(st.PartialDir(), maxPartialAge); err != nil {
		o.Log.Warn("could not clean partial downloads", "error", err)
	} else if len(removed) > 0 {
		o.Log.Info("removed partial downloads that cannot be resumed", "files", removed)
	}
	// A crash during a garbage collection may have left revisions that
	// the recorded state no longer keeps: collect them now.
	if removed, err := st.GC(state, cfg.KeepRevisions); err != nil {
		o.Log.Warn("garbage collection of old revisions failed", "error", err)
	} else if len(removed) > 0 {
		o.Log.Info("removed old revisions", "digests", removed)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Trim == nil {
		o.Trim = memtrim.Trim
	}
	a := &Agent{
		cfg: cfg, store: st, appliers: o.Appliers, metrics: o.Metrics, log: o.Log, version: o.Version,
		device: device, now: o.Now, trim: o.Trim,
		state: state, sources: map[string]*source{}, inUse: map[string]int{}, limiter: newLimiter(cfg.MaxBandwidth),
	}
	mirrors, err := cfg.Mirrors()
	if err != nil {
		return nil, err
	}
	a.mirrors = mirrors
	if b := cfg.Bundles; b.PushTo != "" {
		a.pushClient, err = oci.NewClient(oci.Options{
			DockerConfig: b.Credentials.DockerConfig, CAFile: b.CAFile, Insecure: b.Insecure,
			UserAgent: "berth-agent/" + a.version, WrapTransport: a.metrics.InstrumentTransport,
		})
		if err != nil {
			return nil, fmt.Errorf("bundles.pushTo %s: %w", b.PushTo, err)
		}
	}
	for _, sc := range cfg.Sources {
		s, err := a.newSource(sc)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", sc.Name, err)
		}
		a.sources[sc.Name] = s
		a.order = append(a.order, sc.Name)
		ss := state.Source(sc.Name)
		if sc.Suspend {
			ss.Suspended = true
		}
	}
	if cfg.Margo != nil {
		if a.margo, err = a.newMargo(cfg); err != nil {
			return nil, fmt.Errorf("margo: %w", err)
		}
	}
	return a, nil
}

func (a *Agent) newSource(sc config.Source) (*source, error) {
	s := &source{cfg: sc, file: sc.File, trigger: make(chan struct{}, 1)}
	s.remote = &deliver.Remote{Timeout: sc.Timeout, Log: a.log.With("source", sc.Name)}
	if sc.File == "" {
		// A bundle's client is made when it is opened.
		ref, err := oci.ParseReference(sc.URL)
		if err != nil {
			return nil, err
		}
		client, err := oci.NewClient(oci.Options{
			DockerConfig:  sc.Credentials.DockerConfig,
			CAFile:        sc.CAFile,
			Insecure:      sc.Insecure,
			UserAgent:     "berth-agent/" + a.version,
			WrapTransport: a.metrics.InstrumentTransport,
			MaxTags:       sc.Limits.MaxTags,
			MaxTagPages:   sc.Limits.MaxTagPages,
		})
		if err != nil {
			return nil, err
		}
		s.ref, s.remote.Client, s.remote.Mirrors = ref, client, a.mirrors
	}
	s.limiter = a.limiter
	if sc.MaxBandwidth > 0 {
		s.limiter = newLimiter(sc.MaxBandwidth)
	}
	s.policy.Limits = cosign.Limits{MaxSignatures: sc.Limits.MaxSignatures, MaxReferrers: sc.Limits.MaxReferrers}
	var err error
	if sc.Ref.Semver != "" || sc.Filter != nil {
		if s.selector, err = selector.New(sc.SelectorPolicy()); err != nil {
			return nil, err
		}
	}
	if sc.Verify != nil {
		if s.policy, err = loadPolicy(sc.Verify); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Run reconciles every source at its interval until ctx ends. ready is
// called once every source has been attempted once.
func (a *Agent) Run(ctx context.Context, ready func()) error {
	var wg sync.WaitGroup
	for _, ap := range a.appliers {
		if w, ok := ap.(Watcher); ok {
			wg.Go(func() {
				if err := w.Watch(ctx, a.appliedRevisions, a.minInterval()); err != nil && ctx.Err() == nil {
					a.log.Error("drift watch stopped", "applier", ap.Kind(), "error", err)
				}
			})
		}
	}
	var once sync.Once
	var first sync.WaitGroup
	first.Add(len(a.order))
	if a.margo != nil {
		first.Add(1)
		wg.Go(func() { a.margo.loop(ctx, first.Done) })
	}
	for _, name := range a.order {
		s := a.sources[name]
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.loop(ctx, name, s, first.Done)
		}()
	}
	go func() {
		first.Wait()
		if ready != nil && ctx.Err() == nil {
			once.Do(ready)
		}
	}()
	wg.Wait()
	return nil
}

// RunOnce reconciles every source once and returns their results. It is an
// explicit request, like ReconcileNow: the failed-digest backoff does not
// apply, and suspended sources are reported, not reconciled.
func (a *Agent) RunOnce(ctx context.Context) []api.ReconcileResult {
	out, _ := a.ReconcileNow(ctx, "", api.ReconcileOptions{})
	return out
}

func (a *Agent) loop(ctx context.Context, name string, s *source, firstDone func()) {
	first := true
	var prev api.ReconcileResult
	for {
		var res api.ReconcileResult
		if a.suspended(name) {
			res = api.ReconcileResult{Source: name, Outcome: "suspended"}
		} else {
			res = a.reconcile(ctx, name, s, request{})
		}
		if trims(first, prev, res) {
			a.trim()
		}
		prev = res
		if first {
			first = false
			firstDone()
		}
		wait := a.nextWait(name, s, res)
		s.mu.Lock()
		s.next = a.now().Add(wait)
		s.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-s.trigger:
			t.Stop()
		}
	}
}

// trims reports whether the loop hands memory back to the device after
// res, the poll after prev. Start-up, applies and rollbacks touch much code
// and memory that the idle agent does not need again, and so may a poll
// whose outcome is new (a release prefetched, a first failure). A poll
// that found nothing new leaves nothing worth trimming, nor does one held
// back, or failing, again as the last one was: a release waits for its
// wave for hours and is polled every interval meanwhile, and a trim costs
// a full garbage collection and the program's pages read back in.
func trims(first bool, prev, res api.ReconcileResult) bool {
	switch res.Outcome {
	case string(store.OutcomeUnchanged), "backoff":
		return first
	case string(store.OutcomeApplied), string(store.OutcomeRolledBack), string(store.OutcomeFailed):
		return true
	}
	return first || res.Outcome != prev.Outcome || res.Digest != prev.Digest || res.Message != prev.Message || res.Error != prev.Error
}

// nextWait is the interval with jitter after a success, and an exponential
// backoff capped at the interval after a failure. A release waiting for
// something that ends at a known time (its wave or an update window opens,
// an inhibitor expires) is looked at again then, if that is sooner than
// the interval, plus a jitter that only adds: the devices of a wave spread
// over the jitter after it opens instead of all polling at its first
// second, and none polls before.
func (a *Agent) nextWait(name string, s *source, res api.ReconcileResult) time.Duration {
	interval := s.cfg.Interval
	if w := res.Waiting; w != nil && !w.Until.IsZero() {
		if d := w.Until.Sub(a.now()); d < interval {
			return max(d, 0) + time.Duration(rand.Float64()*s.cfg.Jitter*float64(interval)) + waitSlack
		}
	}
	a.mu.Lock()
	failures := a.state.Source(name).Failures
	a.mu.Unlock()
	d := interval
	if res.Outcome != string(store.OutcomeApplied) && res.Outcome != string(store.OutcomeUnchanged) && failures > 0 {
		d = backoff(failures, interval)
	}
	return jitter(d, s.cfg.Jitter)
}

// waitSlack is added to a wait that ends at a known time, so that the poll
// lands after it, not a tick before.
const waitSlack = 10 * time.Millisecond

// backoff is 2s·2^(n-1), capped at max.
func backoff(n int, max time.Duration) time.Duration {
	d := 2 * time.Second
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

func jitter(d time.Duration, frac float64) time.Duration {
	if frac <= 0 {
		return d
	}
	delta := (rand.Float64()*2 - 1) * frac * float64(d)
	return time.Duration(float64(d) + delta)
}

func (a *Agent) suspended(name string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state.Source(name).Suspended
}

// Trigger asks the loop of source to reconcile now, without waiting.
func (a *Agent) trigger(name string) {
	if a.isMargo(name) {
		a.margo.wake()
	}
	if s, ok := a.sources[name]; ok {
		select {
		case s.trigger <- struct{}{}:
		default:
		}
	}
}

// appliedRevisions returns the revision `current` points at for every
// source, for the appliers' drift watchers.
func (a *Agent) appliedRevisions() []state.Revision {
	var out []state.Revision
	for _, name := range a.order {
		d, err := a.store.Current(name)
		if err != nil || d == "" {
			continue
		}
		dir, err := a.store.RevisionDir(d)
		if err != nil {
			continue
		}
		ds, err := loadState(dir)
		if err != nil {
			continue
		}
		out = append(out, state.Revision{Source: name, Digest: d, Dir: dir, State: ds, Extensions: a.cfg.Extensions})
	}
	if a.margo != nil {
		out = append(out, a.margo.applied()...)
	}
	return out
}

func (a *Agent) minInterval() time.Duration {
	m := time.Duration(0)
	if a.margo != nil {
		m = a.margo.cfg.Interval
	}
	for _, s := range a.sources {
		if m == 0 || s.cfg.Interval < m {
			m = s.cfg.Interval
		}
	}
	return m
}
