package progress

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// The outcomes of berth_source_last_outcome that count as a failure of the
// release (metrics.OutcomeFailed and metrics.OutcomeRefused on the
// device; the publishing side does not link the agent's packages).
const (
	outcomeFailed  = "failed"
	outcomeRefused = "refused"
)

// Querier evaluates PromQL; promv1.API is one.
type Querier interface {
	Query(ctx context.Context, query string, ts time.Time, opts ...promv1.Option) (model.Value, promv1.Warnings, error)
}

var _ Querier = promv1.API(nil)

// Placement is a release's rollout plan as far as status needs it: its
// waves in order, and the wave of a device. The rollout plan of the
// release (policy/rollout) provides it. The labels a device is placed by
// are those of its berth_device_info, keyed by their Prometheus label
// names (labels.PrometheusName); NewPlan makes one of a rollout plan.
type Placement interface {
	// Waves returns the plan's waves, in order.
	Waves() []Wave
	// Place returns the name of the wave the device is in.
	Place(device string, labels map[string]string) string
}

// Wave is a wave of a rollout plan.
type Wave struct {
	// Name of the wave.
	Name string
	// Opens is when the wave opens: the release's created time plus the
	// wave's after. Zero: open from the start.
	Opens time.Time
}

// NoPlan is the wave of every device of a release without a rollout plan.
const NoPlan = "(no plan)"

// Query says which release and which devices Read looks at.
type Query struct {
	// Digest is the release, sha256:<64 hex>.
	Digest string
	// Source is the name the devices track the release's repository under
	// (sources[].name in agent.yaml); the fleet is then the devices that
	// report that source. Empty: every device.
	Source string
	// Selector restricts the devices with PromQL label matchers on their
	// labels, such as `site="berlin",line=~"3|4"`. Empty: none.
	Selector string
	// UnseenAfter: a device whose last heartbeat is older is unseen
	// (N intervals of its report.prometheus). Default 3 minutes.
	UnseenAfter time.Duration
	// Window is how far back devices are looked for. Default 24 hours.
	Window time.Duration
	// At is when the status is evaluated. Default now.
	At time.Time
}

// State is where a device stands with a release.
type State string

// States of a device.
const (
	// StateHealthy: the device runs the release.
	StateHealthy State = "healthy"
	// StateFailed: the device failed or refused the release.
	StateFailed State = "failed"
	// StateUnseen: no heartbeat for longer than UnseenAfter.
	StateUnseen State = "unseen"
	// StateWaiting: the device holds the release back (wave, window,
	// inhibitor, paused).
	StateWaiting State = "waiting"
	// StatePending: the device has not taken the release yet, and says
	// nothing about it.
	StatePending State = "pending"
)

// Device is one device's part in the rollout.
type Device struct {
	ID     string            `json:"id"`
	Labels map[string]string `json:"labels,omitempty"`
	Wave   string            `json:"wave"`
	// Applied is the digest the device runs for the source.
	Applied string `json:"applied,omitempty"`
	// Outcome is the device's last outcome for the release (applied,
	// failed, refused, rolled_back, waiting); empty when it reported none.
	Outcome string `json:"outcome,omitempty"`
	// Waiting is why the device holds the release back.
	Waiting  string    `json:"waiting,omitempty"`
	LastSeen time.Time `json:"lastSeen,omitzero"`
	State    State     `json:"state"`
}

// WaveStatus counts the devices of one wave.
type WaveStatus struct {
	Name  string    `json:"name"`
	Opens time.Time `json:"opens,omitzero"`
	Open  bool      `json:"open"`
	// Devices in the wave.
	Devices int `json:"devices"`
	// OnRelease run the release (healthy, or failed after it, for
	// example on a later attempt).
	OnRelease int `json:"onRelease"`
	Healthy   int `json:"healthy"`
	// Failed are the ids of the devices that failed or refused it.
	Failed []string `json:"failed"`
	// Waiting counts the devices that hold it back, by reason.
	Waiting map[string]int `json:"waiting,omitempty"`
	// Unseen are the ids of the devices without a recent heartbeat.
	Unseen  []string `json:"unseen"`
	Pending int      `json:"pending"`
}

// Report is the rollout status of a release.
type Report struct {
	Digest string       `json:"digest"`
	At     time.Time    `json:"at"`
	Waves  []WaveStatus `json:"waves"`
	// Devices are every device's part, by wave then id.
	Devices []Device `json:"devices"`
	// Settled: every wave is open and no device is pending or waiting
	// (each is healthy, failed or unseen).
	Settled bool `json:"settled"`
	// Complete: settled, and no device failed.
	Complete bool `json:"complete"`
}

var (
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	sourceRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
)

// Read asks Prometheus for the status of the release q.Digest; p is its
// rollout plan, nil for a release without one (one wave, NoPlan).
func Read(ctx context.Context, prom Querier, p Placement, q Query) (*Report, error) {
	if !digestRE.MatchString(q.Digest) {
		return nil, fmt.Errorf("%w: %q is not a digest (sha256:<64 hex>)", ErrQuery, q.Digest)
	}
	if q.Source != "" && !sourceRE.MatchString(q.Source) {
		return nil, fmt.Errorf("%w: %q is not a source name", ErrQuery, q.Source)
	}
	if strings.ContainsAny(q.Selector, "{}") {
		return nil, fmt.Errorf("%w: the selector %q must be label matchers without braces, such as site=\"berlin\"", ErrQuery, q.Selector)
	}
	q.UnseenAfter = cmp.Or(q.UnseenAfter, 3*time.Minute)
	q.Window = cmp.Or(q.Window, 24*time.Hour)
	if q.At.IsZero() {
		q.At = time.Now()
	}
	f, err := fetch(ctx, prom, q)
	if err != nil {
		return nil, err
	}
	return build(f, p, q), nil
}

// facts are what Prometheus says, by device id.
type facts struct {
	labels  map[string]map[string]string
	seen    map[string]time.Time
	applied map[string]string
	outcome map[string]outcome
	wave    map[string]string
	waiting map[string]string
	members map[string]bool // nil: every device with labels
}

type outcome struct{ digest, outcome string }

// fetch runs the queries.
func fetch(ctx context.Context, prom Querier, q Query) (*facts, error) {
	sel := func(extra ...string) string {
		m := slices.DeleteFunc(append(extra, q.Selector), func(s string) bool { return s == "" })
		return "{" + strings.Join(m, ",") + "}"
	}
	src := ""
	if q.Source != "" {
		src = fmt.Sprintf("source=%q", q.Source)
	}
	dig := fmt.Sprintf("digest=%q", q.Digest)
	w := model.Duration(q.Window).String()
	f := &facts{labels: map[string]map[string]string{}, seen: map[string]time.Time{}, applied: map[string]string{},
		outcome: map[string]outcome{}, wave: map[string]string{}, waiting: map[string]string{}}
	run := func(query string, each func(id string, m model.Metric, v float64)) error {
		v, _, err := prom.Query(ctx, query, q.At)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrQuery, query, err)
		}
		vec, ok := v.(model.Vector)
		if !ok {
			return fmt.Errorf("%w: %s: want a vector, got %s", ErrQuery, query, v.Type())
		}
		for _, s := range vec {
			if id := string(s.Metric["device"]); id != "" {
				each(id, s.Metric, float64(s.Value))
			}
		}
		return nil
	}
	deviceLabels := func(id string, m model.Metric, _ float64) {
		ls := map[string]string{}
		for k, v := range m {
			if k != model.MetricNameLabel && k != "device" {
				ls[string(k)] = string(v)
			}
		}
		f.labels[id] = ls
	}
	steps := []struct {
		query string
		each  func(id string, m model.Metric, v float64)
	}{
		// Devices seen in the window, then their current labels.
		{fmt.Sprintf("last_over_time(berth_device_info%s[%s])", sel(), w), deviceLabels},
		{"berth_device_info" + sel(), deviceLabels},
		{fmt.Sprintf("last_over_time(berth_report_timestamp_seconds%s[%s])", sel(), w), func(id string, _ model.Metric, v float64) {
			f.seen[id] = time.UnixMilli(int64(v * 1000))
		}},
		{"berth_source_applied_info" + sel(src), func(id string, m model.Metric, _ float64) {
			if d := string(m["digest"]); f.applied[id] != q.Digest {
				f.applied[id] = d
			}
		}},
		{"berth_source_last_outcome" + sel(src), func(id string, m model.Metric, _ float64) {
			if f.outcome[id].digest != q.Digest {
				f.outcome[id] = outcome{string(m["digest"]), string(m["outcome"])}
			}
		}},
		{"berth_rollout_wave_info" + sel(src, dig), func(id string, m model.Metric, _ float64) { f.wave[id] = string(m["wave"]) }},
		{"berth_rollout_waiting" + sel(src, dig), func(id string, m model.Metric, _ float64) { f.waiting[id] = string(m["reason"]) }},
	}
	if q.Source != "" {
		f.members = map[string]bool{}
		steps = append(steps, struct {
			query string
			each  func(id string, m model.Metric, v float64)
		}{fmt.Sprintf("count by (device) (last_over_time(berth_source_applied_info%s[%s]))", sel(src), w), func(id string, _ model.Metric, _ float64) { f.members[id] = true }})
	}
	for _, s := range steps {
		if err := run(s.query, s.each); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// build puts the devices in their waves and counts them.
func build(f *facts, p Placement, q Query) *Report {
	r := &Report{Digest: q.Digest, At: q.At.UTC(), Devices: []Device{}}
	waves := []Wave{{Name: NoPlan}}
	if p != nil {
		waves = p.Waves()
	}
	index := map[string]int{}
	for _, w := range waves {
		index[w.Name] = len(r.Waves)
		r.Waves = append(r.Waves, WaveStatus{Name: w.Name, Opens: w.Opens.UTC(), Open: w.Opens.IsZero() || !q.At.Before(w.Opens), Failed: []string{}, Unseen: []string{}})
	}
	ids := map[string]bool{}
	for _, m := range []map[string]string{f.applied, f.wave, f.waiting} {
		for id := range m {
			ids[id] = true
		}
	}
	for id := range f.labels {
		ids[id] = true
	}
	for id := range f.outcome {
		ids[id] = true
	}
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		if f.members != nil && !f.members[id] && f.wave[id] == "" && f.waiting[id] == "" && f.outcome[id].digest != q.Digest {
			continue
		}
		d := device(f, p, q, id)
		i, ok := index[d.Wave]
		if !ok {
			// A wave the device reports but the plan does not have.
			i = len(r.Waves)
			index[d.Wave] = i
			r.Waves = append(r.Waves, WaveStatus{Name: d.Wave, Open: true, Failed: []string{}, Unseen: []string{}})
		}
		count(&r.Waves[i], d, q.Digest)
		r.Devices = append(r.Devices, d)
	}
	slices.SortStableFunc(r.Devices, func(a, b Device) int { return cmp.Compare(index[a.Wave], index[b.Wave]) })
	r.Settled = len(r.Devices) > 0
	for _, w := range r.Waves {
		if !w.Open || w.Pending > 0 || len(w.Waiting) > 0 {
			r.Settled = false
		}
	}
	r.Complete = r.Settled && !slices.ContainsFunc(r.Waves, func(w WaveStatus) bool { return len(w.Failed) > 0 })
	return r
}

// device states one device.
func device(f *facts, p Placement, q Query, id string) Device {
	d := Device{ID: id, Labels: f.labels[id], Applied: f.applied[id], Waiting: f.waiting[id], LastSeen: f.seen[id]}
	if o := f.outcome[id]; o.digest == q.Digest {
		d.Outcome = o.outcome
	}
	switch {
	case f.wave[id] != "":
		d.Wave = f.wave[id]
	case p != nil:
		d.Wave = p.Place(id, d.Labels)
	default:
		d.Wave = NoPlan
	}
	unseen := d.LastSeen.IsZero() || q.At.Sub(d.LastSeen) > q.UnseenAfter
	switch {
	case d.Outcome == outcomeFailed || d.Outcome == outcomeRefused:
		d.State = StateFailed
	case unseen:
		d.State = StateUnseen
	case d.Applied == q.Digest:
		d.State = StateHealthy
	case d.Waiting != "":
		d.State = StateWaiting
	default:
		d.State = StatePending
	}
	return d
}

// count adds a device to its wave.
func count(w *WaveStatus, d Device, digest string) {
	w.Devices++
	if d.Applied == digest {
		w.OnRelease++
	}
	switch d.State {
	case StateHealthy:
		w.Healthy++
	case StateFailed:
		w.Failed = append(w.Failed, d.ID)
	case StateUnseen:
		w.Unseen = append(w.Unseen, d.ID)
	case StateWaiting:
		if w.Waiting == nil {
			w.Waiting = map[string]int{}
		}
		w.Waiting[d.Waiting]++
	case StatePending:
		w.Pending++
	}
}
