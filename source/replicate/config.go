package replicate

import (
	"os"
	"strings"
	"time"

	"github.com/berth-dev/berth/source/selector"
)

// Defaults and bounds of a mirror.yaml.
const (
	// DefaultInterval is how often a job runs in daemon mode unless the
	// file or the job sets interval.
	DefaultInterval = 5 * time.Minute
	// MinInterval is the shortest interval accepted.
	MinInterval = 10 * time.Second
	// DefaultConcurrency is how many tags are copied at once.
	DefaultConcurrency = 4
	// MaxConcurrency bounds concurrency.
	MaxConcurrency = 64
	// MaxLatest bounds latest.
	MaxLatest = 10000
)

// Config is a parsed mirror.yaml.
type Config struct {
	// File is the name the file was parsed under.
	File string
	// Interval is the default interval of the jobs (daemon mode).
	Interval time.Duration
	// Concurrency is how many tags are copied at once, over all jobs.
	Concurrency int
	// Registries are per-registry connection settings.
	Registries []Registry
	// Jobs are the sync jobs, in file order.
	Jobs []Job
}

// Registry holds the connection settings of one registry host.
type Registry struct {
	// Host is the registry host, with its port if any.
	Host string
	// Insecure talks plain HTTP to it.
	Insecure bool
	// CAFile is a PEM bundle of CAs to trust for it (resolved against the
	// folder of the configuration).
	CAFile string
}

// Job is one sync job.
type Job struct {
	// Name names the job in reports and logs; default: Source.
	Name string
	// Source is the upstream repository (host/path), or, with
	// Repositories, a registry host or host/path prefix.
	Source string
	// Repositories are paths under Source, each synced from Source/P to
	// Target/P. Empty: Source and Targets are repositories.
	Repositories []string
	// Targets are the target repositories, or prefixes with Repositories.
	Targets []string
	// Tags are explicit tags to sync.
	Tags []string
	// Semver is a semver range (Masterminds syntax); with Filter, it
	// bounds the extracted values.
	Semver string
	// Filter is a tag filter as in the agent's configuration.
	Filter *Filter
	// Latest keeps only the newest Latest tags of the selection; 0: all.
	Latest int
	// Interval is how often the job runs in daemon mode.
	Interval time.Duration
	// Line is the line of the job in the file, for messages.
	Line int
}

// Filter selects tags by regular expression, as Flux's ImagePolicy does.
type Filter struct {
	// Pattern is the regular expression a tag must match.
	Pattern string
	// Extract is the value of a tag to order by, such as "$ts".
	Extract string
	// Order is semver, numerical or alphabetical.
	Order string
	// Direction is asc or desc.
	Direction string
}

// Policy returns the selector policy of a job that selects tags by semver
// range or filter; ok is false for a job with explicit tags.
func (j Job) Policy() (p selector.Policy, ok bool) {
	if j.Filter == nil && j.Semver == "" {
		return selector.Policy{}, false
	}
	p.Semver = j.Semver
	if f := j.Filter; f != nil {
		p.Pattern, p.Extract, p.Order, p.Direction = f.Pattern, f.Extract, f.Order, f.Direction
	}
	return p, true
}

// Route is one upstream repository copied to its target repositories.
type Route struct {
	// Job is the index of the job in Config.Jobs.
	Job int
	// Source is the upstream repository, host/path.
	Source string
	// Targets are the target repositories, host/path.
	Targets []string
}

// Routes expands the job's prefixes: one route per repository.
func (j Job) Routes(index int) []Route {
	if len(j.Repositories) == 0 {
		return []Route{{Job: index, Source: j.Source, Targets: j.Targets}}
	}
	out := make([]Route, 0, len(j.Repositories))
	for _, p := range j.Repositories {
		r := Route{Job: index, Source: j.Source + "/" + p}
		for _, t := range j.Targets {
			r.Targets = append(r.Targets, t+"/"+p)
		}
		out = append(out, r)
	}
	return out
}

// Routes returns the routes of every job, in file order.
func (c *Config) Routes() []Route {
	var out []Route
	for i, j := range c.Jobs {
		out = append(out, j.Routes(i)...)
	}
	return out
}

// Load reads and parses the mirror configuration at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// normRepo is the form repositories are compared in: the host
// lowercased.
func normRepo(s string) string {
	host, rest, found := strings.Cut(s, "/")
	host = strings.ToLower(host)
	if !found {
		return host
	}
	return host + "/" + rest
}
