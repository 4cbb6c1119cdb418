// Package grafana holds the Grafana dashboard of fleet status
// (berth-fleet.json) and the test that runs its queries.
package grafana

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/berth-dev/berth/internal/fleetsim"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/reconcile/metrics"
)

const (
	release = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	before  = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
)

type dashboard struct {
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID      int     `json:"id"`
	Type    string  `json:"type"`
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr    string `json:"expr"`
		Instant bool   `json:"instant"`
	} `json:"targets"`
}

// vars are the values the dashboard's variables take in the test.
var vars = map[string]string{"$source": ".*", "$digest": release, "$unseen": "180"}

// TestDashboardQueries feeds a real Prometheus with a simulated fleet
// (devices on two versions, in three waves, failing, waiting, unseen, and
// one that dropped queued samples) through the real reporter, then runs
// every query of berth-fleet.json: each must succeed and return data, which
// the simulation guarantees for every panel.
func TestDashboardQueries(t *testing.T) {
	data, err := os.ReadFile("berth-fleet.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("berth-fleet.json: %v", err)
	}
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{})
	now := time.Now().Truncate(time.Second)
	simulate(t, p, now)
	api := p.API()
	ctx := context.Background()

	queries := 0
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, pn := range ps {
			walk(pn.Panels)
			if pn.Type == "row" {
				continue
			}
			if len(pn.Targets) == 0 {
				t.Errorf("panel %d %q has no query", pn.ID, pn.Title)
			}
			for _, tg := range pn.Targets {
				queries++
				q := substitute(t, tg.Expr)
				var v model.Value
				var warns promv1.Warnings
				var err error
				if tg.Instant {
					v, warns, err = api.Query(ctx, q, now)
				} else {
					v, warns, err = api.QueryRange(ctx, q, promv1.Range{Start: now.Add(-time.Hour), End: now, Step: time.Minute})
				}
				switch {
				case err != nil:
					t.Errorf("panel %q: %s: %v", pn.Title, q, err)
				case len(warns) > 0:
					t.Errorf("panel %q: %s: warnings %v", pn.Title, q, warns)
				case empty(v):
					t.Errorf("panel %q: %s: no data, but the simulated fleet has some", pn.Title, q)
				}
			}
		}
	}
	walk(d.Panels)
	if queries < 10 {
		t.Fatalf("only %d queries in the dashboard", queries)
	}
	// The variables' label_values queries must find values.
	labelValues := regexp.MustCompile(`^label_values\((.+), (\w+)\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Fatalf("variable %s: unexpected query %q", v.Name, q.Query)
		}
		vec := p.Vector(substitute(t, m[1]))
		found := false
		for _, s := range vec {
			found = found || s.Metric[model.LabelName(m[2])] != ""
		}
		if !found {
			t.Errorf("variable %s: %s has no %s", v.Name, m[1], m[2])
		}
	}
}

// substitute puts the test's values in the dashboard's variables.
func substitute(t *testing.T, expr string) string {
	for k, v := range vars {
		expr = strings.ReplaceAll(expr, k, v)
	}
	if strings.Contains(expr, "$") {
		t.Fatalf("unknown variable in %s", expr)
	}
	return expr
}

func empty(v model.Value) bool {
	switch x := v.(type) {
	case model.Vector:
		return len(x) == 0
	case model.Matrix:
		return len(x) == 0
	}
	return v == nil
}

// simulate makes the fleet: its devices report every 10 minutes over the
// last half hour.
func simulate(t *testing.T, p *testenv.Prometheus, now time.Time) {
	t.Helper()
	o := fleetsim.Options{URL: p.WriteURL(), Dir: t.TempDir(), Refresh: -1}
	type dev struct {
		id, wave string
		labels   map[string]string
		state    func(d *fleetsim.Device)
		late     bool
	}
	applied := func(d *fleetsim.Device) { d.Apply("line-3", release, "1.5.0", now) }
	waiting := func(reason metrics.WaitReason) func(d *fleetsim.Device) {
		return func(d *fleetsim.Device) {
			d.Metrics.SetOutcome("line-3", release, metrics.OutcomeWaiting)
			d.Metrics.SetWaiting("line-3", release, reason, now.Add(time.Hour))
		}
	}
	devs := []dev{
		{id: "d00", wave: "canary", labels: map[string]string{"ring": "canary"}, state: applied},
		{id: "d01", wave: "canary", labels: map[string]string{"ring": "canary"}, state: func(d *fleetsim.Device) { d.Fail("line-3", release, metrics.OutcomeFailed) }},
		{id: "d02", wave: "early", state: applied},
		{id: "d03", wave: "early", state: waiting(metrics.WaitWindow)},
		{id: "d04", wave: "all", state: waiting(metrics.WaitWave)},
		{id: "d05", wave: "all", state: waiting(metrics.WaitWave), late: true},
	}
	for _, s := range devs {
		d, err := fleetsim.NewDevice(o, s.id, s.labels)
		if err != nil {
			t.Fatal(err)
		}
		d.Apply("line-3", before, "1.4.0", now.Add(-time.Hour))
		d.Metrics.SetWave("line-3", release, s.wave)
		s.state(d)
		last := 4
		if s.late {
			last = 2
		}
		for i := 1; i <= last; i++ {
			d.Poll("line-3", now)
			d.Tick(context.Background(), now.Add(time.Duration(i-4)*10*time.Minute-10*time.Second))
		}
		if st := d.Reporter.Status(); st.LastError != "" || st.SentSamples == 0 {
			t.Fatalf("%s: %+v", s.id, st)
		}
	}
	// A device whose endpoint was unreachable long enough to drop samples.
	d, err := fleetsim.NewDevice(fleetsim.Options{URL: "http://127.0.0.1:1/api/v1/write", Dir: o.Dir, MaxSize: 4000, Refresh: -1}, "d06", nil)
	if err != nil {
		t.Fatal(err)
	}
	d.Apply("line-3", before, "1.4.0", now.Add(-time.Hour))
	for i := range 5 {
		d.Tick(context.Background(), now.Add(time.Duration(i-30)*time.Minute))
	}
	if d.Reporter.Status().DroppedSamples == 0 {
		t.Fatalf("d06 dropped nothing: %+v", d.Reporter.Status())
	}
	if err := d.Reconnect(o); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		d.Tick(context.Background(), now.Add(time.Duration(i-3)*10*time.Minute-5*time.Second))
	}
	if st := d.Reporter.Status(); st.LastError != "" || st.QueuedSamples != 0 {
		t.Fatalf("d06 after reconnecting: %+v", st)
	}
}
