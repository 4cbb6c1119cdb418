package progress

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/fleetsim"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/reconcile/metrics"
)

const (
	release = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	before  = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
)

// tablePlan is a Placement by table: the test's stand-in for the rollout
// plan of policy/rollout.
type tablePlan struct {
	waves []Wave
	place map[string]string
}

func (p tablePlan) Waves() []Wave { return p.waves }
func (p tablePlan) Place(id string, labels map[string]string) string {
	if labels["ring"] == "canary" {
		return "canary"
	}
	return p.place[id]
}

var _ Placement = tablePlan{}

// simulated is one device of the simulation and what the test expects of
// it.
type simulated struct {
	id     string
	labels map[string]string
	source string
	do     func(d *fleetsim.Device)
	// late: the device last reported 10 minutes ago.
	late bool
	// wave and state are the ground truth.
	wave  string
	state State
}

// TestReadFleet feeds a real Prometheus with the reports of simulated
// devices in every state, and checks Read's counts against the ground
// truth the simulation sets up.
func TestReadFleet(t *testing.T) {
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{})
	now := time.Now().Truncate(time.Second)
	berlin := func(extra ...string) map[string]string {
		m := map[string]string{"site": "berlin"}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return m
	}
	applied := func(d *fleetsim.Device) { d.Apply("line-3", release, "1.5.0", now) }
	old := func(d *fleetsim.Device) { d.Apply("line-3", before, "1.4.0", now) }
	wave := func(w string, then func(*fleetsim.Device)) func(*fleetsim.Device) {
		return func(d *fleetsim.Device) { then(d); d.Metrics.SetWave("line-3", release, w) }
	}
	wait := func(reason metrics.WaitReason) func(*fleetsim.Device) {
		return func(d *fleetsim.Device) {
			old(d)
			d.Metrics.SetOutcome("line-3", release, metrics.OutcomeWaiting)
			d.Metrics.SetWaiting("line-3", release, reason, now.Add(time.Hour))
		}
	}
	fail := func(o metrics.Outcome) func(*fleetsim.Device) {
		return func(d *fleetsim.Device) { old(d); d.Fail("line-3", release, o) }
	}
	sims := []simulated{
		{id: "d00", labels: berlin("ring", "canary"), do: wave("canary", applied), wave: "canary", state: StateHealthy},
		{id: "d01", labels: berlin("ring", "canary"), do: wave("canary", fail(metrics.OutcomeFailed)), wave: "canary", state: StateFailed},
		{id: "d02", labels: berlin("ring", "canary"), do: applied, wave: "canary", state: StateHealthy}, // placed by its labels
		{id: "d03", labels: berlin(), do: wave("early", applied), wave: "early", state: StateHealthy},
		{id: "d04", labels: berlin(), do: wave("early", fail(metrics.OutcomeRefused)), wave: "early", state: StateFailed},
		{id: "d05", labels: berlin(), do: wave("early", wait(metrics.WaitWindow)), wave: "early", state: StateWaiting},
		{id: "d06", labels: berlin(), do: old, wave: "early", state: StatePending},
		{id: "d07", labels: berlin(), do: wave("early", applied), late: true, wave: "early", state: StateUnseen},
		{id: "d08", labels: berlin(), do: wave("all", wait(metrics.WaitWave)), wave: "all", state: StateWaiting},
		{id: "d09", labels: berlin(), do: wave("all", wait(metrics.WaitWave)), wave: "all", state: StateWaiting},
		{id: "d10", labels: berlin(), do: wave("all", wait(metrics.WaitPaused)), wave: "all", state: StateWaiting},
		// Not in the fleet of the query: another source, another site.
		{id: "x01", labels: berlin(), source: "other", do: func(d *fleetsim.Device) { d.Apply("other", before, "1.0.0", now) }},
		{id: "x02", labels: map[string]string{"site": "paris"}, do: wave("early", applied)},
	}
	plan := tablePlan{
		waves: []Wave{{Name: "canary"}, {Name: "early", Opens: now.Add(-time.Hour)}, {Name: "all", Opens: now.Add(time.Hour)}},
		place: map[string]string{"d03": "early", "d04": "early", "d05": "early", "d06": "early", "d07": "early", "d08": "all", "d09": "all", "d10": "all"},
	}
	dir := t.TempDir()
	for _, s := range sims {
		d, err := fleetsim.NewDevice(fleetsim.Options{URL: p.WriteURL(), Dir: dir}, s.id, s.labels)
		if err != nil {
			t.Fatal(err)
		}
		s.do(d)
		at := now.Add(-10 * time.Second)
		if s.late {
			at = now.Add(-10 * time.Minute)
		}
		d.Tick(context.Background(), at)
		if st := d.Reporter.Status(); st.SentSamples == 0 || st.LastError != "" {
			t.Fatalf("%s: %+v", s.id, st)
		}
	}

	r, err := Read(context.Background(), p.API(), plan, Query{Digest: release, Source: "line-3", Selector: `site="berlin"`, UnseenAfter: 3 * time.Minute, At: now})
	if err != nil {
		t.Fatal(err)
	}
	// The ground truth, from the simulation.
	want := map[string]*WaveStatus{}
	for _, w := range plan.waves {
		want[w.Name] = &WaveStatus{Name: w.Name, Opens: w.Opens.UTC(), Open: !now.Before(w.Opens), Failed: []string{}, Unseen: []string{}}
	}
	states := map[string]State{}
	for _, s := range sims {
		if s.wave == "" {
			continue
		}
		states[s.id] = s.state
		w := want[s.wave]
		w.Devices++
		switch s.state {
		case StateHealthy:
			w.Healthy++
			w.OnRelease++
		case StateFailed:
			w.Failed = append(w.Failed, s.id)
		case StateUnseen:
			w.Unseen = append(w.Unseen, s.id)
		case StatePending:
			w.Pending++
		}
	}
	want["early"].Waiting = map[string]int{"window": 1}
	want["all"].Waiting = map[string]int{"wave": 2, "paused": 1}
	if len(r.Waves) != 3 {
		t.Fatalf("waves: %+v", r.Waves)
	}
	for _, got := range r.Waves {
		if w := want[got.Name]; !reflect.DeepEqual(&got, w) {
			t.Errorf("wave %s:\n got %+v\nwant %+v", got.Name, got, *w)
		}
	}
	for _, d := range r.Devices {
		if states[d.ID] != d.State {
			t.Errorf("device %s: state %s, want %s (%+v)", d.ID, d.State, states[d.ID], d)
		}
		delete(states, d.ID)
	}
	if len(states) != 0 {
		t.Errorf("devices missing from the report: %v", states)
	}
	if r.Settled || r.Complete {
		t.Errorf("settled %v complete %v with a closed wave", r.Settled, r.Complete)
	}
	if d := r.Devices[0]; d.ID != "d00" || d.Labels["ring"] != "canary" || d.LastSeen.IsZero() || d.Applied != release {
		t.Errorf("first device: %+v", d)
	}

	// The breaker trips on canary (1 of 3 tried failed) and early (1 of 2)
	// at 20 %; with --min-devices 3 only canary is judged.
	trips := Breaker{MaxFailed: Threshold{Percent: 20, IsPercent: true}, MinDevices: 3}.Check(r)
	if len(trips) != 1 || trips[0].Wave != "canary" || !slices.Equal(trips[0].Failed, []string{"d01"}) || trips[0].Tried != 3 {
		t.Fatalf("trips = %+v", trips)
	}

	// Without a plan: one wave, every device of the source in it.
	r, err = Read(context.Background(), p.API(), nil, Query{Digest: release, Source: "line-3", At: now})
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, w := range r.Waves {
		total += w.Devices
	}
	if len(r.Waves) != 4 || r.Waves[0].Name != NoPlan || r.Waves[0].Devices != 3 || total != 12 {
		// The devices report their waves: those the plan does not have are
		// listed after it.
		t.Fatalf("without a plan: %+v", r.Waves)
	}
}

// TestReadErrors checks what Read refuses before asking Prometheus, and
// that a query error names the query.
func TestReadErrors(t *testing.T) {
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{})
	for _, q := range []Query{
		{Digest: "sha256:abc"},
		{Digest: release, Source: "Bad Name"},
		{Digest: release, Selector: `}) or vector(1) or ({`},
	} {
		if _, err := Read(context.Background(), p.API(), nil, q); err == nil {
			t.Errorf("%+v: no error", q)
		}
	}
	_, err := Read(context.Background(), p.API(), nil, Query{Digest: release, Selector: `site=~"("`})
	if err == nil || !strings.Contains(err.Error(), "berth_device_info") {
		t.Fatalf("bad selector: %v", err)
	}
}

// TestNewClient reads through a Prometheus with TLS and basic auth.
func TestNewClient(t *testing.T) {
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{TLS: true, BasicAuth: true})
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(p.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	api, err := NewClient(ClientOptions{URL: p.URL(), CAFile: p.CAFile, Username: p.Username, PasswordFile: pw})
	if err != nil {
		t.Fatal(err)
	}
	r, err := Read(context.Background(), api, nil, Query{Digest: release})
	if err != nil || len(r.Devices) != 0 || r.Settled {
		t.Fatalf("empty Prometheus: %+v, %v", r, err)
	}
	if err := os.WriteFile(pw, []byte("wrong"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(context.Background(), api, nil, Query{Digest: release}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := NewClient(ClientOptions{URL: "https://u:p@prom.local"}); err == nil {
		t.Fatal("credentials in the URL accepted")
	}
}
