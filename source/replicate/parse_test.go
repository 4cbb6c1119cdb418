package replicate

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/yamlstrict"
)

func TestParseMinimal(t *testing.T) {
	c, err := Parse("/etc/berth/mirror.yaml", []byte(`
jobs:
  - source: ghcr.io/acme/web
    targets: [registry.plant.local/acme/web]
    tags: ["1.0.0"]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		File:        "/etc/berth/mirror.yaml",
		Interval:    DefaultInterval,
		Concurrency: DefaultConcurrency,
		Jobs: []Job{{
			Name: "ghcr.io/acme/web", Source: "ghcr.io/acme/web", Targets: []string{"registry.plant.local/acme/web"},
			Tags: []string{"1.0.0"}, Interval: DefaultInterval, Line: 3,
		}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("config\n%+v\nwant\n%+v", c, want)
	}
}

func TestParseFull(t *testing.T) {
	c, err := Parse("/etc/berth/mirror.yaml", []byte(`
interval: 10m
concurrency: 8
registries:
  - host: plant.local:5000
    insecure: true
  - host: registry.plant.local
    caFile: certs/plant-ca.pem
jobs:
  - name: line-3
    source: ghcr.io/acme/fleet/line-3
    targets: [registry.plant.local/acme/fleet/line-3, "[::1]:5000/line-3"]
    semver: ">=1.2 <2"
    latest: 3
    interval: 1m
  - source: ghcr.io/acme
    repositories: [web, charts/metrics]
    targets: [registry.plant.local/acme]
    filter: {pattern: '^main-(?P<ts>[0-9]+)$', extract: $ts, order: numerical}
  - name: replica
    source: registry.plant.local/acme/fleet/line-3
    targets: [plant.local:5000/acme/fleet/line-3]
    filter: {pattern: '.*'}
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Interval != 10*time.Minute || c.Concurrency != 8 {
		t.Errorf("interval %v, concurrency %d", c.Interval, c.Concurrency)
	}
	wantRegs := []Registry{{Host: "plant.local:5000", Insecure: true}, {Host: "registry.plant.local", CAFile: filepath.Join("/etc/berth/certs/plant-ca.pem")}}
	if !reflect.DeepEqual(c.Registries, wantRegs) {
		t.Errorf("registries %+v", c.Registries)
	}
	if len(c.Jobs) != 3 {
		t.Fatalf("jobs %+v", c.Jobs)
	}
	j0, j1, j2 := c.Jobs[0], c.Jobs[1], c.Jobs[2]
	if j0.Latest != 3 || j0.Interval != time.Minute || j0.Semver != ">=1.2 <2" {
		t.Errorf("job 0 %+v", j0)
	}
	if j1.Name != "ghcr.io/acme" || j1.Interval != 10*time.Minute || *j1.Filter != (Filter{Pattern: "^main-(?P<ts>[0-9]+)$", Extract: "$ts", Order: "numerical", Direction: "asc"}) {
		t.Errorf("job 1 %+v %+v", j1, j1.Filter)
	}
	if j2.Filter.Order != "alphabetical" {
		t.Errorf("a filter without latest gets no default order: %+v", j2.Filter)
	}
	routes := c.Routes()
	want := []Route{
		{Job: 0, Source: "ghcr.io/acme/fleet/line-3", Targets: []string{"registry.plant.local/acme/fleet/line-3", "[::1]:5000/line-3"}},
		{Job: 1, Source: "ghcr.io/acme/web", Targets: []string{"registry.plant.local/acme/web"}},
		{Job: 1, Source: "ghcr.io/acme/charts/metrics", Targets: []string{"registry.plant.local/acme/charts/metrics"}},
		{Job: 2, Source: "registry.plant.local/acme/fleet/line-3", Targets: []string{"plant.local:5000/acme/fleet/line-3"}},
	}
	if !reflect.DeepEqual(routes, want) {
		t.Errorf("routes\n%+v\nwant\n%+v", routes, want)
	}
	if lv := levels(routes); !reflect.DeepEqual(lv, []int{0, 0, 0, 1}) {
		t.Errorf("levels %v", lv)
	}
}

// TestParseExample parses the example the repository ships.
func TestParseExample(t *testing.T) {
	c, err := Load("../../examples/mirror.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Jobs) < 2 {
		t.Errorf("example has %d jobs", len(c.Jobs))
	}
	if _, err := New(c, nil, Options{}); err != nil {
		t.Errorf("New: %v", err)
	}
}

// TestParseErrors: every problem is reported with the file, line and
// field, all at once.
func TestParseErrors(t *testing.T) {
	const job = "jobs:\n  - source: ghcr.io/acme/web\n    targets: [plant.local/acme/web]\n"
	for _, tc := range []struct {
		name, yaml string
		want       []string // lines of the error, in order
	}{
		{"empty", "", []string{"m.yaml: empty file: a mirror configuration needs at least one job under jobs:"}},
		{"not yaml", "jobs: [", []string{"m.yaml:1: invalid YAML:"}},
		{"two documents", job + "    tags: [a]\n---\njobs: []\n", []string{"m.yaml:5: a second YAML document"}},
		{"no jobs", "interval: 1m\n", []string{`m.yaml:1: missing required field "jobs"`}},
		{"empty jobs", "jobs: []\n", []string{"m.yaml:1: jobs: needs at least one job"}},
		{"unknown top", "intervall: 1m\n" + job + "    tags: [a]\n", []string{`m.yaml:1: unknown field "intervall" (did you mean "interval"?)`}},
		{"unknown job field", job + "    tags: [a]\n    lattest: 2\n", []string{`m.yaml:5: jobs[0]: unknown field "lattest" (did you mean "latest"?)`}},
		{"bad interval", "interval: 1\n" + job + "    tags: [a]\n", []string{"m.yaml:1: interval: must be a duration such as 1m or 30s, got the number 1 (add a unit: s, m or h)"}},
		{"short interval", job + "    tags: [a]\n    interval: 1s\n", []string{"m.yaml:5: jobs[0].interval: must be at least 10s"}},
		{"concurrency", "concurrency: 0\n" + job + "    tags: [a]\n", []string{"m.yaml:1: concurrency: must be between 1 and 64, got 0"}},
		{"no selection", job, []string{"m.yaml:2: jobs[0]: selects no tag: give tags:"}},
		{"tags and semver", job + "    tags: [a]\n    semver: '>=1'\n", []string{"m.yaml:4: jobs[0].tags: does not apply with semver"}},
		{"empty tags", job + "    tags: []\n", []string{"m.yaml:4: jobs[0].tags: needs at least one tag"}},
		{"bad tag", job + "    tags: [-x]\n", []string{`m.yaml:4: jobs[0].tags[0]: invalid tag "-x"`}},
		{"signature tag", job + "    tags: [sha256-" + strings.Repeat("a", 64) + ".sig]\n", []string{"is a signature tag"}},
		{"duplicate tag", job + "    tags: [a, a]\n", []string{`m.yaml:4: jobs[0].tags[1]: "a" is listed twice`}},
		{"bad semver", job + "    semver: '>=1.0 <'\n", []string{`m.yaml:4: jobs[0].semver: invalid semver range ">=1.0 <"`}},
		{"bad pattern", job + "    filter: {pattern: '('}\n", []string{`m.yaml:4: jobs[0].filter.pattern: invalid regular expression "("`}},
		{"filter without pattern", job + "    filter: {order: numerical}\n", []string{`m.yaml:4: jobs[0].filter: missing required field "pattern"`}},
		{"latest needs order", job + "    filter: {pattern: x}\n    latest: 2\n", []string{"m.yaml:4: jobs[0].filter.order: is required with latest"}},
		{"latest with tags", job + "    tags: [a]\n    latest: 2\n", []string{"m.yaml:5: jobs[0].latest: only applies with semver or filter"}},
		{"latest zero", job + "    semver: '*'\n    latest: 0\n", []string{"m.yaml:5: jobs[0].latest: must be between 1 and 10000, got 0"}},
		{"source scheme", "jobs:\n  - {source: 'oci://ghcr.io/a', targets: [p.local/a], tags: [a]}\n", []string{`m.yaml:2: jobs[0].source: must be a repository such as ghcr.io/acme/web or registry.plant.local:5000/acme/web, without a scheme, got "oci://ghcr.io/a"`}},
		{"source host only", "jobs:\n  - {source: ghcr.io, targets: [p.local/a], tags: [a]}\n", []string{`names no repository: give host/path, or list the paths to sync under it in repositories:`}},
		{"source uppercase", "jobs:\n  - {source: ghcr.io/Acme, targets: [p.local/a], tags: [a]}\n", []string{`"ghcr.io/Acme": the repository path must be lowercase`}},
		{"source tag", "jobs:\n  - {source: ghcr.io/a:v1, targets: [p.local/a], tags: [a]}\n", []string{`"ghcr.io/a:v1" must not carry a tag`}},
		{"docker hub shorthand", "jobs:\n  - {source: acme/web, targets: [p.local/a], tags: [a]}\n", []string{`"acme/web" does not start with a registry host`}},
		{"credentials", "jobs:\n  - {source: 'u:p@ghcr.io/a', targets: [p.local/a], tags: [a]}\n", []string{"without credentials or digest"}},
		{"bad port", "jobs:\n  - {source: 'ghcr.io:99999/a', targets: [p.local/a], tags: [a]}\n", []string{`port must be a number from 1 to 65535, got "99999"`}},
		{"missing source and targets", "jobs:\n  - {tags: [a]}\n", []string{`m.yaml:2: jobs[0]: missing required field "source"`, `m.yaml:2: jobs[0]: missing required field "targets"`}},
		{"no targets", "jobs:\n  - {source: a.io/x, targets: [], tags: [a]}\n", []string{"m.yaml:2: jobs[0].targets: needs at least one target"}},
		{"target is source", "jobs:\n  - {source: a.io/x, targets: [A.io/x], tags: [a]}\n", []string{`m.yaml:2: jobs[0].targets[0]: "A.io/x" is the source itself`}},
		{"empty repositories", "jobs:\n  - {source: a.io, repositories: [], targets: [b.io], tags: [a]}\n", []string{"m.yaml:2: jobs[0].repositories: needs at least one repository path"}},
		{"bad repository path", "jobs:\n  - {source: a.io, repositories: [/x], targets: [b.io], tags: [a]}\n", []string{`jobs[0].repositories[0]: "/x" is not a repository path`}},
		{"duplicate names", job + "    tags: [a]\n" + "  - {name: ghcr.io/acme/web, source: a.io/x, targets: [b.io/x], tags: [a]}\n", []string{`m.yaml:5: jobs[1].name: duplicate job name "ghcr.io/acme/web" (first at line 2)`}},
		{"bad name", job + "    tags: [a]\n    name: 'a b'\n", []string{`jobs[0].name: must be 1 to 255 printable characters without spaces, got "a b"`}},
		{"two upstreams", job + "    tags: [a]\n  - {name: other, source: x.io/web, targets: [plant.local/acme/web], tags: [a]}\n",
			[]string{`m.yaml:5: jobs[1].targets: plant.local/acme/web is already the target of ghcr.io/acme/web in job "ghcr.io/acme/web" (line 2): a target repository has one upstream`}},
		{"cycle", "jobs:\n  - {name: a, source: a.io/x, targets: [b.io/x], tags: [v]}\n  - {name: b, source: b.io/x, targets: [a.io/x], tags: [v]}\n",
			[]string{`jobs "b", "a" copy in a cycle: b.io/x → a.io/x → b.io/x`}},
		{"prefix cycle", "jobs:\n  - {name: a, source: a.io, repositories: [x], targets: [b.io/m], tags: [v]}\n  - {name: b, source: b.io/m/x, targets: [a.io/x], tags: [v]}\n",
			[]string{`copy in a cycle`}},
		{"registry host", "registries:\n  - {host: 'https://p.local'}\n" + job + "    tags: [a]\n", []string{`m.yaml:2: registries[0].host: "https://p.local" is not a registry host`}},
		{"registry both", "registries:\n  - {host: p.local, insecure: true, caFile: ca.pem}\n" + job + "    tags: [a]\n", []string{"m.yaml:2: registries[0]: has both caFile and insecure"}},
		{"registry twice", "registries:\n  - {host: p.local}\n  - {host: P.local}\n" + job + "    tags: [a]\n", []string{`m.yaml:3: registries[1].host: "P.local" is listed twice (first at line 2)`}},
		{"registry unknown", "registries:\n  - {host: p.local, user: x}\n" + job + "    tags: [a]\n", []string{`m.yaml:2: registries[0]: unknown field "user"`}},
		{"alias", "x: &a [a]\n" + job + "    tags: *a\n", []string{`unknown field "x"`, "jobs[0].tags: YAML aliases are not supported here"}},
		{"several at once", "concurrency: 100\njobs:\n  - {source: a.io/x, targets: [b.io/x], tags: [a], semver: '*'}\n  - {source: c.io/x}\n",
			[]string{"m.yaml:1: concurrency:", "m.yaml:3: jobs[0].tags: does not apply with semver", `m.yaml:4: jobs[1]: missing required field "targets"`, "m.yaml:4: jobs[1]: selects no tag"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("m.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			if c != nil {
				t.Error("a config returned with an error")
			}
			lines := strings.Split(err.Error(), "\n")
			for _, l := range lines {
				if !strings.HasPrefix(l, "m.yaml") {
					t.Errorf("error line does not name the file: %q", l)
				}
			}
			var ye *yamlstrict.Error
			if !errors.As(err, &ye) {
				t.Errorf("error is not a *yamlstrict.Error: %T", err)
			}
			i := 0
			for _, w := range tc.want {
				for i < len(lines) && !strings.Contains(lines[i], w) {
					i++
				}
				if i == len(lines) {
					t.Errorf("error does not say %q (in order):\n%v", w, err)
					return
				}
			}
		})
	}
}

func TestNewRefusesCycle(t *testing.T) {
	cfg := &Config{Concurrency: 1, Jobs: []Job{
		{Name: "a", Source: "a.io/x", Targets: []string{"b.io/x"}, Tags: []string{"v"}},
		{Name: "b", Source: "b.io/x", Targets: []string{"a.io/x"}, Tags: []string{"v"}},
	}}
	if _, err := New(cfg, nil, Options{}); !errors.Is(err, ErrCycle) {
		t.Errorf("New = %v, want ErrCycle", err)
	}
}

func TestLevels(t *testing.T) {
	routes := []Route{
		{Source: "c/x", Targets: []string{"d/x"}},
		{Source: "b/x", Targets: []string{"c/x", "e/x"}},
		{Source: "a/x", Targets: []string{"B/x"}},
		{Source: "e/x", Targets: []string{"f/x"}},
		{Source: "z/x", Targets: []string{"y/x"}},
	}
	if got, want := levels(routes), []int{2, 1, 0, 2, 0}; !reflect.DeepEqual(got, want) {
		t.Errorf("levels %v, want %v", got, want)
	}
	if cycle(routes) != nil {
		t.Error("cycle found in a chain")
	}
}
