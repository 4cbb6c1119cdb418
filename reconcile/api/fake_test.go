package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/berth-dev/berth/reconcile/store"
)

const (
	digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	digestC = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
)

type suspendCall struct {
	source  string
	suspend bool
}

type rollbackCall struct{ source, digest string }

type notifyCall struct{ host, repository, tag, digest string }

// fakeAgent implements Agent for testing the HTTP layer. Sources "app" and
// "web" exist; "broken" makes ReconcileNow fail and "slow" makes it wait
// for its context.
type fakeAgent struct {
	mu        sync.Mutex
	status    Status
	ready     error
	reconcile []string
	suspends  []suspendCall
	rollbacks []rollbackCall
	notified  []notifyCall
	cancelled chan struct{} // closed when a slow reconcile sees its context end
	started   chan struct{} // closed when a slow reconcile starts
}

func newFakeAgent() *fakeAgent {
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	return &fakeAgent{
		cancelled: make(chan struct{}),
		started:   make(chan struct{}),
		status: Status{
			Version:  "v1.2.3",
			StateDir: "/var/lib/berth",
			Sources: []SourceStatus{
				{
					Name: "app", URL: "oci://registry.example:5000/fleet/line-3", Ref: "tag", Interval: "1m0s",
					NextReconcile: t0.Add(time.Minute),
					SourceState: store.SourceState{
						Applied:     &store.Revision{Digest: digestB, Tag: "v2", Time: t0, Outcome: store.OutcomeApplied},
						Last:        &store.Revision{Digest: digestB, Tag: "v2", Time: t0, Outcome: store.OutcomeUnchanged},
						LastSuccess: t0,
						History: []store.Revision{
							{Digest: digestB, Tag: "v2", Time: t0, Outcome: store.OutcomeApplied},
							{Digest: digestA, Tag: "v1", Time: t0.Add(-time.Hour), Outcome: store.OutcomeApplied,
								Annotations: map[string]string{"org.opencontainers.image.revision": "abc"}},
						},
					},
				},
				{
					Name: "web", URL: "oci://registry.example:5000/fleet/web", Ref: "semver", Interval: "5m0s",
					Reconciling: true,
					SourceState: store.SourceState{Suspended: true},
				},
			},
		},
	}
}

func (f *fakeAgent) known(source string) error {
	for _, s := range f.status.Sources {
		if s.Name == source {
			return nil
		}
	}
	return fmt.Errorf("%w %q", ErrUnknownSource, source)
}

func (f *fakeAgent) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func (f *fakeAgent) Ready() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

var (
	resultApp = ReconcileResult{Source: "app", Outcome: "unchanged", Digest: digestB}
	resultWeb = ReconcileResult{Source: "web", Outcome: "refused", Digest: digestC, Error: "no signature for " + digestC}
)

func (f *fakeAgent) ReconcileNow(ctx context.Context, source string, o ReconcileOptions) ([]ReconcileResult, error) {
	f.mu.Lock()
	call := source
	if o.IgnoreWindows {
		call += " ignoring windows"
	}
	f.reconcile = append(f.reconcile, call)
	f.mu.Unlock()
	switch source {
	case "":
		return []ReconcileResult{resultApp, resultWeb}, nil
	case "app":
		return []ReconcileResult{resultApp}, nil
	case "web":
		return []ReconcileResult{resultWeb}, nil
	case "broken":
		return nil, errors.New("write state: read-only file system")
	case "slow":
		close(f.started)
		<-ctx.Done()
		close(f.cancelled)
		return nil, ctx.Err()
	}
	return nil, f.known(source)
}

func (f *fakeAgent) Suspend(source string, suspend bool) error {
	if err := f.known(source); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.suspends = append(f.suspends, suspendCall{source, suspend})
	return nil
}

func (f *fakeAgent) Rollback(ctx context.Context, source, digest string) (ReconcileResult, error) {
	if err := f.known(source); err != nil {
		return ReconcileResult{}, err
	}
	f.mu.Lock()
	f.rollbacks = append(f.rollbacks, rollbackCall{source, digest})
	f.mu.Unlock()
	if source == "web" {
		return ReconcileResult{}, fmt.Errorf("rollback web: %w: no earlier revision", ErrConflict)
	}
	if digest == "" {
		digest = digestA
	}
	return ReconcileResult{Source: source, Outcome: string(store.OutcomeRolledBack), Digest: digest}, nil
}

func (f *fakeAgent) NotifyRepository(ctx context.Context, host, repository, tag, digest string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notified = append(f.notified, notifyCall{host, repository, tag, digest})
	var names []string
	for _, s := range f.status.Sources {
		if s.URL == "oci://"+host+"/"+repository {
			names = append(names, s.Name)
		}
	}
	return names
}

func (f *fakeAgent) calls() (reconcile []string, suspends []suspendCall, rollbacks []rollbackCall, notified []notifyCall) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reconcile), slices.Clone(f.suspends), slices.Clone(f.rollbacks), slices.Clone(f.notified)
}

// recordingHandler keeps the log records.
type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}

func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

// find returns the attributes of the records with message msg.
func (h *recordingHandler) find(msg string) []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]string
	for _, r := range h.records {
		if r.Message != msg {
			continue
		}
		m := map[string]string{"level": r.Level.String()}
		r.Attrs(func(a slog.Attr) bool {
			m[a.Key] = a.Value.String()
			return true
		})
		out = append(out, m)
	}
	return out
}
