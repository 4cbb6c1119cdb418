package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/config"
	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/margo"
	"github.com/berth-dev/berth/source/margo/materialize"
	"github.com/berth-dev/berth/source/margo/outbox"
	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/state"
)

// MargoSource is the name of the Margo source (the margo: block of
// agent.yaml) in status, state.json and what it deploys.
const MargoSource = config.MargoSource

// margoSource is the runtime of the Margo source: the device is the WFM
// client of a Margo Workload Fleet Manager (see package margo, whose doc
// describes the seam this follows, and margo_attempt.go for one
// reconcile).
//
// Its revisions live in the agent's store like any source's: a Margo
// revision is a folder materialized from the WFM's deployments (package
// materialize), content-addressed by the digest of its plan, switched in
// with `current` of MargoSource. What the WFM's desired state was
// reconciled to is persisted in <stateDir>/margo/state.json (margo.State),
// and only after the appliers applied it and state.json recorded it: the
// accepted manifestVersion never claims more than what runs. Its Revision
// names the revision in force then; a device found with another one in
// force was stopped while it applied an update, and puts that revision
// back first (recover), then takes the update again.
type margoSource struct {
	a       *Agent
	cfg     *config.Margo
	src     *source // the name and interval record() needs
	client  *margo.Client
	rep     *margo.Reporter
	fetcher materialize.Fetcher
	// download is how the components download: resumed from the store's
	// partial folder, capped by margo.maxBandwidth (else the global one),
	// checked against minFreeSpace.
	download materialize.Download
	info     margo.DeviceInfo
	dir      string // <stateDir>/margo
	log      *slog.Logger

	run     sync.Mutex    // one reconcile at a time
	trigger chan struct{} // wakes the loop

	mu          sync.Mutex // guards the fields below
	st          *margo.State
	next        time.Time
	reconciling bool
	attempted   bool
	capsSent    bool // capabilities sent since the agent started
	recovered   bool // recover ran
	held        []string
	backoff     margo.Backoff
	lastErr     error
	failures    int       // consecutive reconciles that left deployments failed
	retryAt     time.Time // failed deployments are not retried before, unless asked
	posted      map[string]string
}

// newMargo prepares the Margo source: the WFM client (it reaches no WFM
// yet), the accepted state, the status queue and the components' delivery
// path through the registry mirrors, with the trust policy.
func (a *Agent) newMargo(cfg *config.Config) (*margoSource, error) {
	mc := cfg.Margo
	dir := filepath.Join(cfg.StateDir, "margo")
	log := a.log.With("source", MargoSource)
	opts := mc.Client()
	opts.CacheDir, opts.Log, opts.UserAgent = filepath.Join(dir, "cache"), log, "berth-agent/"+a.version
	opts.TrustBundle.CacheFile = cfg.MargoBundleCache()
	client, err := margo.New(opts)
	if err != nil {
		return nil, err
	}
	st, err := margo.LoadState(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, err
	}
	q, err := outbox.Open(filepath.Join(dir, "outbox"), mc.StatusQueue)
	if q == nil {
		return nil, err
	}
	if err != nil {
		log.Warn("Margo status queue: damaged posts removed", "error", err)
	}
	oc, err := oci.NewClient(oci.Options{
		DockerConfig: mc.Credentials.DockerConfig, CAFile: mc.CAFile, Insecure: mc.Insecure,
		UserAgent: "berth-agent/" + a.version, WrapTransport: a.metrics.InstrumentTransport,
	})
	if err != nil {
		return nil, fmt.Errorf("margo: component registries: %w", err)
	}
	f := materialize.Registry{Remote: &deliver.Remote{Client: oc, Mirrors: a.mirrors, Timeout: mc.Timeout, Log: log}, Insecure: mc.InsecureSkipVerify}
	if mc.Verify != nil {
		p, err := loadPolicy(mc.Verify)
		if err != nil {
			return nil, fmt.Errorf("margo.verify: %w", err)
		}
		f.Policy = &p
	}
	m := &margoSource{
		a: a, cfg: mc, src: &source{cfg: config.Source{Name: MargoSource, Interval: mc.Interval}},
		client: client, rep: margo.NewReporter(client, q), fetcher: f, info: mc.Info(cfg.Apply), dir: dir, log: log,
		trigger: make(chan struct{}, 1), st: st, posted: map[string]string{},
		backoff: margo.Backoff{Max: mc.Interval}, download: a.margoDownload(cfg),
	}
	// The revision the accepted state was applied as, and the one in
	// force, stay until recover has looked at them.
	cur, _ := a.store.Current(MargoSource)
	for _, d := range []string{st.Revision, cur} {
		if d != "" {
			m.holdDigest(d)
		}
	}
	return m, nil
}

// margoDownload is how the Margo components download, as a registry
// source's layers do (downloadOptions): resumed with Range from the
// store's partial folder, capped by margo.maxBandwidth or else the global
// maxBandwidth, not started when they would leave less than minFreeSpace.
func (a *Agent) margoDownload(cfg *config.Config) materialize.Download {
	d := materialize.Download{
		PartialDir: a.store.PartialDir(), Resumes: downloadResumes, Limiter: a.limiter,
		MinFree: deliver.MinFree{Bytes: cfg.MinFreeSpace.Bytes, Percent: cfg.MinFreeSpace.Percent},
	}
	if bps := cfg.Margo.MaxBandwidth; bps > 0 {
		d.Limiter = newLimiter(bps)
	}
	return d
}

// loadPolicy loads a trust policy's keys and trusted root.
func loadPolicy(v *config.Verify) (cosign.Policy, error) {
	var p cosign.Policy
	var err error
	if p.Keys, err = cosign.LoadPublicKeys(v.Keys...); err != nil {
		return p, err
	}
	if kl := v.Keyless; kl != nil {
		if p.TrustedRoot, err = cosign.LoadTrustedRoot(kl.TrustedRoot); err != nil {
			return p, err
		}
		for _, id := range kl.Identities {
			p.Identities = append(p.Identities, cosign.Identity{Issuer: id.Issuer, Subject: id.Subject})
		}
	}
	return p, nil
}

// isMargo reports whether name is the configured Margo source.
func (a *Agent) isMargo(name string) bool { return a.margo != nil && name == MargoSource }

// holdDigest keeps d from garbage collection until releaseHeld.
func (m *margoSource) holdDigest(d string) {
	m.a.hold(d, 1)
	m.mu.Lock()
	m.held = append(m.held, d)
	m.mu.Unlock()
}

// releaseHeld releases what holdDigest held.
func (m *margoSource) releaseHeld() {
	m.mu.Lock()
	held := m.held
	m.held = nil
	m.mu.Unlock()
	for _, d := range held {
		m.a.hold(d, -1)
	}
}

// loop polls the WFM at the interval, inside the polling windows, until
// ctx ends.
func (m *margoSource) loop(ctx context.Context, firstDone func()) {
	first := true
	var prev api.ReconcileResult
	for {
		var res api.ReconcileResult
		switch now := time.Now(); {
		case m.a.suspended(MargoSource):
			res = api.ReconcileResult{Source: MargoSource, Outcome: "suspended"}
		case !m.cfg.Windows.MayPoll(now):
			m.log.Debug("Margo: outside the polling windows, or in downtime: not polling", "next", m.cfg.Windows.NextPoll(now))
			res = api.ReconcileResult{Source: MargoSource, Outcome: "window"}
			m.mu.Lock()
			m.attempted = true
			m.mu.Unlock()
		default:
			res = m.reconcile(ctx, false)
		}
		if trims(first, prev, res) {
			m.a.trim()
		}
		prev = res
		if first {
			first = false
			firstDone()
		}
		wait := m.nextWait(res)
		m.mu.Lock()
		m.next = time.Now().Add(wait)
		m.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-m.trigger:
			t.Stop()
		}
	}
}

// nextWait is the interval (with jitter) after a success; after a failure,
// the WFM's Retry-After and backoff (margo.Backoff), at most the interval
// unless the WFM asks for longer; then put off to the next polling window.
func (m *margoSource) nextWait(res api.ReconcileResult) time.Duration {
	d := jitter(m.cfg.Interval, config.DefaultJitter)
	m.mu.Lock()
	if res.Outcome == string(store.OutcomeError) || res.Outcome == string(store.OutcomeRefused) {
		if w, retry := m.backoff.Next(m.lastErr); retry {
			d = w
		}
	} else if res.Outcome != "window" {
		m.backoff.Reset()
	}
	m.mu.Unlock()
	now := time.Now()
	if at := m.cfg.Windows.NextPoll(now.Add(d)); at.IsZero() {
		d = 24 * time.Hour
	} else if w := at.Sub(now); w > d {
		d = w
	}
	return d
}

// now reconciles at once, for berth reconcile --now and agent --once: the
// polling windows and the retry delay of failed deployments do not apply.
func (m *margoSource) now(ctx context.Context) api.ReconcileResult {
	if m.a.suspended(MargoSource) {
		return api.ReconcileResult{Source: MargoSource, Outcome: "suspended", Error: "source is suspended: berth resume " + MargoSource}
	}
	return m.reconcile(ctx, true)
}

func (m *margoSource) wake() {
	select {
	case m.trigger <- struct{}{}:
	default:
	}
}

// ready reports whether the source was attempted since the agent started.
func (m *margoSource) ready() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.attempted
}

// margoDetail is SourceStatus.Detail of the Margo source.
type margoDetail struct {
	WFM             string             `json:"wfm"`
	DeviceID        string             `json:"deviceId"`
	ManifestVersion uint64             `json:"manifestVersion"`
	ETag            string             `json:"etag,omitempty"`
	QueuedStatuses  int                `json:"queuedStatuses"`
	Deployments     []margoDeployState `json:"deployments"`
}

type margoDeployState struct {
	ID string `json:"id"`
	margo.DeploymentState
}

// status is the Margo source's SourceStatus; ss is its recorded state
// (the caller holds a.mu).
func (m *margoSource) status(ss store.SourceState) api.SourceStatus {
	m.mu.Lock()
	st := m.st.Clone()
	next, busy := m.next, m.reconciling
	m.mu.Unlock()
	d := margoDetail{WFM: m.cfg.WFM, DeviceID: m.cfg.DeviceID, ManifestVersion: st.ManifestVersion, ETag: st.ETag, QueuedStatuses: m.rep.Pending(), Deployments: []margoDeployState{}}
	for _, id := range slices.Sorted(maps.Keys(st.Deployments)) {
		d.Deployments = append(d.Deployments, margoDeployState{ID: id, DeploymentState: st.Deployments[id]})
	}
	raw, _ := json.Marshal(d)
	ref := fmt.Sprintf("Margo WFM, manifestVersion %d, %d deployments", st.ManifestVersion, len(st.Deployments))
	if n := d.QueuedStatuses; n > 0 {
		ref += fmt.Sprintf(", %d status posts queued", n)
	}
	return api.SourceStatus{Name: MargoSource, URL: m.cfg.WFM, Ref: ref, Interval: m.cfg.Interval.String(),
		NextReconcile: next, Reconciling: busy, SourceState: ss, Detail: raw}
}

// applied is the Margo revision in force, for the appliers' drift
// watchers; nil when none.
func (m *margoSource) applied() []state.Revision {
	d, err := m.a.store.Current(MargoSource)
	if err != nil || d == "" {
		return nil
	}
	rev, err := m.revision(d)
	if err != nil {
		return nil
	}
	return []state.Revision{rev.rev}
}

// margoRevision is a Margo revision of the store, its plan loaded.
type margoRevision struct {
	rev  state.Revision
	plan *materialize.Plan
}

// revision loads the Margo revision of digest d from the store.
func (m *margoSource) revision(d string) (*margoRevision, error) {
	dir, err := m.a.store.RevisionDir(d)
	if err != nil {
		return nil, err
	}
	p, rev, err := materialize.LoadPlan(MargoSource, dir)
	if err != nil {
		return nil, err
	}
	if rev.Digest != d {
		return nil, fmt.Errorf("Margo revision %s: its plan has digest %s", d, rev.Digest)
	}
	return &margoRevision{rev: rev, plan: p}, nil
}

// empty is the revision of nothing: applying it removes every app of the
// Margo source.
func emptyMargoRevision() *margoRevision {
	p := &materialize.Plan{}
	return &margoRevision{rev: state.Revision{Source: MargoSource, State: p.DeviceState()}, plan: p}
}

// recover puts back the revision the accepted state was applied as, when
// another one is in force: the agent was stopped while it applied an
// update (between the switch and the accepted state's save). The update is
// then taken again, from the WFM, as if it had never started.
func (m *margoSource) recover(ctx context.Context) {
	defer m.releaseHeld()
	cur, err := m.a.store.Current(MargoSource)
	want := m.st.Revision
	if err != nil || cur == want {
		return
	}
	log := m.log.With("interrupted", cur, "revision", want)
	log.Warn("Margo: the agent stopped while it applied an update; putting back the revision in force before it")
	var interrupted *state.Revision
	if cur != "" {
		if r, err := m.revision(cur); err == nil {
			interrupted = &r.rev
		}
	}
	back := emptyMargoRevision()
	if want != "" {
		if back, err = m.revision(want); err != nil {
			log.Error("Margo: the revision to put back is unreadable; the update will be taken again over what runs", "error", err)
			return
		}
		err = m.a.store.Switch(MargoSource, want)
	} else {
		err = m.a.store.Clear(MargoSource)
	}
	if err != nil {
		log.Error("Margo: could not switch back", "error", err)
		return
	}
	if _, err := m.a.apply(ctx, back.rev, interrupted); err != nil {
		log.Error("Margo: putting back the revision failed; the next update applies over it", "error", err)
		return
	}
	log.Info("Margo: the revision in force before the interrupted update is back")
}

// reconcile runs one reconcile of the Margo source and records it.
func (m *margoSource) reconcile(ctx context.Context, force bool) api.ReconcileResult {
	m.run.Lock()
	defer m.run.Unlock()
	m.mu.Lock()
	m.reconciling = true
	recovered := m.recovered
	m.recovered = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.reconciling, m.attempted = false, true
		m.mu.Unlock()
	}()
	if !recovered {
		m.recover(ctx)
	}
	start := time.Now()
	t := m.newAttempt(force)
	defer t.close()
	err := t.run(ctx)
	outcome := store.OutcomeApplied
	switch {
	case errors.Is(err, errUnchanged):
		outcome, err = store.OutcomeUnchanged, nil
	case t.switched:
		// A revision is in force: applied, with the failed deployments
		// said in Error.
	case refused(err):
		outcome = store.OutcomeRefused
	case err != nil:
		outcome = store.OutcomeError
	}
	rev := t.rev
	rev.Outcome = outcome
	if err != nil {
		rev.Error = err.Error()
	}
	m.mu.Lock()
	m.lastErr = err
	m.mu.Unlock()
	m.a.record(MargoSource, m.src, rev, nil) // Margo deployments are not held back by rollouts
	if err := t.accept(); err != nil {
		m.log.Error("Margo: could not save the accepted state: the update will be taken again", "error", err)
		rev.Error = errors.Join(errors.New(rev.Error), err).Error()
	}
	m.a.metrics.ObserveReconcile(MargoSource, string(outcome), time.Since(start))
	log := m.log.With("revision", rev.Digest, "outcome", outcome, "duration", time.Since(start).Round(time.Millisecond))
	switch {
	case outcome == store.OutcomeUnchanged:
		log.Debug("reconciled")
	case rev.Error != "":
		log.Warn("reconcile failed", "error", rev.Error)
	default:
		log.Info("reconciled", "manifestVersion", rev.Version)
	}
	return api.ReconcileResult{Source: MargoSource, Outcome: string(outcome), Digest: rev.Digest, Error: rev.Error}
}
