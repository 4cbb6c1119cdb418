package replicate

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/source/selector"
)

// FuzzParse checks that Parse never panics, that every error names the
// file, and that what it accepts is usable: every route names repositories
// the registry client parses, every selection builds a selector, and the
// jobs have no cycle.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("../../examples/mirror.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte("jobs:\n  - {source: a.io/x, targets: [b.io/x], tags: [v1]}\n"))
	f.Add([]byte("jobs:\n  - {source: a.io, repositories: [x, y/z], targets: [b.io/m, 'c:5000'], semver: '>=1', latest: 2}\n"))
	f.Add([]byte("jobs:\n  - {name: a, source: a.io/x, targets: [b.io/x], tags: [v]}\n  - {name: b, source: b.io/x, targets: [a.io/x], tags: [v]}\n"))
	f.Add([]byte("registries: [{host: 'p:1', insecure: true}]\njobs:\n  - {source: '[::1]:5/x', targets: [localhost/y], filter: {pattern: '(?P<n>.*)', extract: $n, order: numerical}, latest: 1}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(fuzzName, data)
		if err != nil {
			if c != nil {
				t.Fatal("a config returned with an error")
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, fuzzName+":") {
					t.Fatalf("error does not name the file: %q", line)
				}
			}
			return
		}
		checkConfig(t, c)
	})
}

// FuzzJobFields puts fuzzed values in the fields of a valid job, so that
// the checks of repositories, tags and selections are reached every run.
func FuzzJobFields(f *testing.F) {
	f.Add("ghcr.io/acme/web", "", "registry.plant.local/acme/web", "1.0.0", "", "", "")
	f.Add("ghcr.io/acme", "web", "registry.plant.local:5000/acme", "", ">=1.0.0-0", "", "")
	f.Add("localhost:5000/a/b_c/d--e", "", "[::1]:5000/x", "", "", `^main-(?P<ts>\d+)$`, "$ts")
	f.Add("r.example/A", "X/", "oci://x", "-x", "1.x.y", "(", "${ts")
	f.Fuzz(func(t *testing.T, source, repo, target, tag, semver, pattern, extract string) {
		var b strings.Builder
		b.WriteString("jobs:\n  - source: " + strconv.Quote(source) + "\n")
		if repo != "" {
			b.WriteString("    repositories: [" + strconv.Quote(repo) + "]\n")
		}
		b.WriteString("    targets: [" + strconv.Quote(target) + "]\n")
		switch {
		case tag != "":
			b.WriteString("    tags: [" + strconv.Quote(tag) + "]\n")
		case pattern != "":
			b.WriteString("    filter: {pattern: " + strconv.Quote(pattern) + ", extract: " + strconv.Quote(extract) + ", order: numerical}\n    latest: 2\n")
			if semver != "" {
				b.WriteString("    semver: " + strconv.Quote(semver) + "\n")
			}
		default:
			b.WriteString("    semver: " + strconv.Quote(semver) + "\n")
		}
		c, err := Parse(fuzzName, []byte(b.String()))
		if err != nil {
			return
		}
		checkConfig(t, c)
	})
}

const fuzzName = "mirror.yaml"

// checkConfig checks the invariants of an accepted configuration.
func checkConfig(t *testing.T, c *Config) {
	t.Helper()
	if len(c.Jobs) == 0 || c.Interval < MinInterval || c.Concurrency < 1 || c.Concurrency > MaxConcurrency {
		t.Fatalf("config %+v", c)
	}
	names := map[string]bool{}
	for _, j := range c.Jobs {
		if j.Name == "" || names[j.Name] || j.Interval < MinInterval || len(j.Targets) == 0 {
			t.Fatalf("job %+v", j)
		}
		names[j.Name] = true
		pol, ok := j.Policy()
		if ok == (len(j.Tags) > 0) {
			t.Fatalf("job %q: tags %v and policy %+v", j.Name, j.Tags, pol)
		}
		if ok {
			if _, err := selector.New(pol); err != nil {
				t.Fatalf("job %q: policy %+v: %v", j.Name, pol, err)
			}
		} else if j.Latest != 0 {
			t.Fatalf("job %q: latest with explicit tags", j.Name)
		}
		for _, tag := range j.Tags {
			if _, err := oci.ParseReference("r.io/x:" + tag); err != nil || oci.IsSignatureTag(tag) {
				t.Fatalf("job %q: tag %q: %v", j.Name, tag, err)
			}
		}
	}
	for _, r := range c.Routes() {
		for _, repo := range append([]string{r.Source}, r.Targets...) {
			ref, err := oci.ParseReference(repo)
			if err != nil || ref.Tag != "" || ref.Digest != "" || ref.Repo() != repo {
				t.Fatalf("route repository %q: %+v, %v", repo, ref, err)
			}
			if normRepo(repo) == normRepo(r.Source) && repo != r.Source {
				t.Fatalf("route %+v copies onto its source", r)
			}
		}
	}
	if _, err := New(c, nil, Options{}); err != nil {
		t.Fatalf("New: %v", err)
	}
}
