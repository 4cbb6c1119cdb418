package mirror

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/distribution/reference"
)

const (
	dg  = "sha256:3f1c6e0e9d3a2b1c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4"
	dg2 = "sha256:0000000000000000000000000000000000000000000000000000000000000001"
)

// eps renders endpoints compactly: "ref" for the source, "ref (mirror M)"
// for a mirror.
func eps(list []Endpoint) []string {
	out := []string{}
	for _, e := range list {
		s := e.Ref
		if e.Mirror != "" {
			s += " (mirror " + e.Mirror + ")"
		}
		out = append(out, s)
	}
	return out
}

func TestEndpoints(t *testing.T) {
	acme := Set{Source: "ghcr.io/acme", Mirrors: []string{"registry.plant.local/acme", "10.0.0.5:5000/acme"}, SourceFallback: true}
	for _, tc := range []struct {
		name string
		sets []Set
		ref  string
		want []string
	}{
		{
			name: "no sets: the source",
			ref:  "ghcr.io/acme/web:v1@" + dg,
			want: []string{"ghcr.io/acme/web:v1@" + dg},
		},
		{
			name: "no set matches: the source",
			sets: []Set{acme},
			ref:  "quay.io/acme/web@" + dg,
			want: []string{"quay.io/acme/web@" + dg},
		},
		{
			name: "digest: every mirror in order, then the source",
			sets: []Set{acme},
			ref:  "ghcr.io/acme/web/api@" + dg,
			want: []string{
				"registry.plant.local/acme/web/api@" + dg + " (mirror registry.plant.local/acme)",
				"10.0.0.5:5000/acme/web/api@" + dg + " (mirror 10.0.0.5:5000/acme)",
				"ghcr.io/acme/web/api@" + dg,
			},
		},
		{
			name: "tag and digest: the digest wins, the tag is kept",
			sets: []Set{acme},
			ref:  "ghcr.io/acme/web:1.2@" + dg,
			want: []string{
				"registry.plant.local/acme/web:1.2@" + dg + " (mirror registry.plant.local/acme)",
				"10.0.0.5:5000/acme/web:1.2@" + dg + " (mirror 10.0.0.5:5000/acme)",
				"ghcr.io/acme/web:1.2@" + dg,
			},
		},
		{
			name: "source is the whole repository",
			sets: []Set{{Source: "ghcr.io/acme/web", Mirrors: []string{"plant.local/web-copy"}, SourceFallback: true}},
			ref:  "ghcr.io/acme/web:1@" + dg,
			want: []string{"plant.local/web-copy:1@" + dg + " (mirror plant.local/web-copy)", "ghcr.io/acme/web:1@" + dg},
		},
		{
			name: "path boundary: acme does not match acmecorp",
			sets: []Set{acme},
			ref:  "ghcr.io/acmecorp/web@" + dg,
			want: []string{"ghcr.io/acmecorp/web@" + dg},
		},
		{
			name: "host source matches every path of the host",
			sets: []Set{{Source: "ghcr.io", Mirrors: []string{"plant.local/ghcr"}, SourceFallback: true}},
			ref:  "ghcr.io/acmecorp/web@" + dg,
			want: []string{"plant.local/ghcr/acmecorp/web@" + dg + " (mirror plant.local/ghcr)", "ghcr.io/acmecorp/web@" + dg},
		},
		{
			name: "host prefix does not match another host",
			sets: []Set{{Source: "ghcr.io", Mirrors: []string{"plant.local"}, SourceFallback: true}},
			ref:  "ghcr.io.evil.example/acme/web@" + dg,
			want: []string{"ghcr.io.evil.example/acme/web@" + dg},
		},
		{
			name: "longest prefix wins, alone",
			sets: []Set{
				{Source: "ghcr.io", Mirrors: []string{"plant.local/ghcr"}, SourceFallback: true},
				{Source: "ghcr.io/acme/web", Mirrors: []string{"web.plant.local"}, SourceFallback: false},
				{Source: "ghcr.io/acme", Mirrors: []string{"acme.plant.local"}, SourceFallback: true},
			},
			ref:  "ghcr.io/acme/web/api@" + dg,
			want: []string{"web.plant.local/api@" + dg + " (mirror web.plant.local)"},
		},
		{
			name: "longest prefix: a shorter one applies outside the longer",
			sets: []Set{
				{Source: "ghcr.io", Mirrors: []string{"plant.local/ghcr"}, SourceFallback: true},
				{Source: "ghcr.io/acme/web", Mirrors: []string{"web.plant.local"}, SourceFallback: false},
			},
			ref:  "ghcr.io/acme/webber@" + dg,
			want: []string{"plant.local/ghcr/acme/webber@" + dg + " (mirror plant.local/ghcr)", "ghcr.io/acme/webber@" + dg},
		},
		{
			name: "ports: host:port source",
			sets: []Set{{Source: "registry.local:5000", Mirrors: []string{"localhost:5001/up"}, SourceFallback: true}},
			ref:  "registry.local:5000/acme/web:v1@" + dg,
			want: []string{"localhost:5001/up/acme/web:v1@" + dg + " (mirror localhost:5001/up)", "registry.local:5000/acme/web:v1@" + dg},
		},
		{
			name: "ports: a port is another host",
			sets: []Set{{Source: "registry.local", Mirrors: []string{"localhost:5001"}, SourceFallback: true}},
			ref:  "registry.local:5000/acme/web@" + dg,
			want: []string{"registry.local:5000/acme/web@" + dg},
		},
		{
			name: "ports: no port does not match a host:port source",
			sets: []Set{{Source: "registry.local:5000", Mirrors: []string{"localhost:5001"}, SourceFallback: true}},
			ref:  "registry.local/acme/web@" + dg,
			want: []string{"registry.local/acme/web@" + dg},
		},
		{
			name: "host case is ignored",
			sets: []Set{{Source: "GHCR.io/acme", Mirrors: []string{"Plant.Local/acme"}, SourceFallback: true}},
			ref:  "ghcr.IO/acme/web@" + dg,
			want: []string{"plant.local/acme/web@" + dg + " (mirror plant.local/acme)", "ghcr.IO/acme/web@" + dg},
		},
		{
			name: "docker.io short name",
			sets: []Set{{Source: "docker.io", Mirrors: []string{"plant.local/hub"}, SourceFallback: true}},
			ref:  "nginx@" + dg,
			want: []string{"plant.local/hub/library/nginx@" + dg + " (mirror plant.local/hub)", "docker.io/library/nginx@" + dg},
		},
		{
			name: "docker.io library prefix, index.docker.io source",
			sets: []Set{{Source: "index.docker.io/library", Mirrors: []string{"plant.local/hub-library"}, SourceFallback: false}},
			ref:  "nginx:1.27@" + dg,
			want: []string{"plant.local/hub-library/nginx:1.27@" + dg + " (mirror plant.local/hub-library)"},
		},
		{
			name: "docker.io user repository",
			sets: []Set{{Source: "docker.io/library", Mirrors: []string{"plant.local/hub"}, SourceFallback: true}},
			ref:  "acme/web@" + dg,
			want: []string{"docker.io/acme/web@" + dg},
		},
		{
			name: "sourceFallback false: mirrors only",
			sets: []Set{{Source: "ghcr.io/acme", Mirrors: []string{"a.local/acme", "b.local/acme"}}},
			ref:  "ghcr.io/acme/web@" + dg,
			want: []string{"a.local/acme/web@" + dg + " (mirror a.local/acme)", "b.local/acme/web@" + dg + " (mirror b.local/acme)"},
		},
		{
			name: "tag: digest-only mirrors skipped, the source",
			sets: []Set{acme},
			ref:  "ghcr.io/acme/web:v1",
			want: []string{"ghcr.io/acme/web:v1"},
		},
		{
			name: "no tag is latest",
			sets: []Set{acme},
			ref:  "ghcr.io/acme/web",
			want: []string{"ghcr.io/acme/web:latest"},
		},
		{
			name: "tag: digest-only mirrors and no fallback: nothing",
			sets: []Set{{Source: "ghcr.io/acme", Mirrors: []string{"a.local/acme"}}},
			ref:  "ghcr.io/acme/web:v1",
			want: []string{},
		},
		{
			name: "tag: allowTags mirrors, then the source",
			sets: []Set{
				{Source: "ghcr.io/acme", Mirrors: []string{"digest.local/acme"}, SourceFallback: true},
				{Source: "ghcr.io/acme", Mirrors: []string{"tags.local/acme"}, AllowTags: true, SourceFallback: true},
			},
			ref:  "ghcr.io/acme/web:v1",
			want: []string{"tags.local/acme/web:v1 (mirror tags.local/acme)", "ghcr.io/acme/web:v1"},
		},
		{
			name: "tag: allowTags mirror without fallback",
			sets: []Set{{Source: "ghcr.io/acme", Mirrors: []string{"tags.local/acme"}, AllowTags: true}},
			ref:  "ghcr.io/acme/web:v1",
			want: []string{"tags.local/acme/web:v1 (mirror tags.local/acme)"},
		},
		{
			name: "digest: allowTags and digest-only mirrors alike",
			sets: []Set{
				{Source: "ghcr.io/acme", Mirrors: []string{"digest.local/acme"}},
				{Source: "ghcr.io/acme", Mirrors: []string{"tags.local/acme"}, AllowTags: true},
			},
			ref:  "ghcr.io/acme/web:v1@" + dg,
			want: []string{"digest.local/acme/web:v1@" + dg + " (mirror digest.local/acme)", "tags.local/acme/web:v1@" + dg + " (mirror tags.local/acme)"},
		},
		{
			name: "composition: config order, duplicates dropped",
			sets: []Set{
				{Source: "ghcr.io/acme", Mirrors: []string{"a.local", "b.local"}},
				{Source: "ghcr.io/acme", Mirrors: []string{"b.local", "c.local"}},
			},
			ref:  "ghcr.io/acme/web@" + dg,
			want: []string{"a.local/web@" + dg + " (mirror a.local)", "b.local/web@" + dg + " (mirror b.local)", "c.local/web@" + dg + " (mirror c.local)"},
		},
		{
			name: "composition: relative order of every set kept",
			sets: []Set{
				{Source: "ghcr.io/acme", Mirrors: []string{"b.local", "c.local"}},
				{Source: "ghcr.io/acme", Mirrors: []string{"a.local", "b.local"}},
			},
			ref:  "ghcr.io/acme/web@" + dg,
			want: []string{"a.local/web@" + dg + " (mirror a.local)", "b.local/web@" + dg + " (mirror b.local)", "c.local/web@" + dg + " (mirror c.local)"},
		},
		{
			name: "composition: contradictory orders settled by config order",
			sets: []Set{
				{Source: "ghcr.io/acme", Mirrors: []string{"a.local", "b.local"}},
				{Source: "ghcr.io/acme", Mirrors: []string{"b.local", "a.local"}},
			},
			ref:  "ghcr.io/acme/web@" + dg,
			want: []string{"a.local/web@" + dg + " (mirror a.local)", "b.local/web@" + dg + " (mirror b.local)"},
		},
		{
			name: "composition: a repeat within a set and a normalised duplicate",
			sets: []Set{
				{Source: "ghcr.io/acme", Mirrors: []string{"a.local", "b.local", "a.local"}},
				{Source: "GHCR.IO/acme", Mirrors: []string{"A.local", "c.local"}},
			},
			ref:  "ghcr.io/acme/web@" + dg,
			want: []string{"a.local/web@" + dg + " (mirror a.local)", "b.local/web@" + dg + " (mirror b.local)", "c.local/web@" + dg + " (mirror c.local)"},
		},
		{
			name: "composition: sourceFallback off when any set turns it off",
			sets: []Set{
				{Source: "ghcr.io/acme", Mirrors: []string{"a.local"}},
				{Source: "ghcr.io/acme", Mirrors: []string{"b.local"}, SourceFallback: true},
			},
			ref:  "ghcr.io/acme/web@" + dg,
			want: []string{"a.local/web@" + dg + " (mirror a.local)", "b.local/web@" + dg + " (mirror b.local)"},
		},
		{
			name: "composition: sourceFallback on when every set allows it",
			sets: []Set{
				{Source: "ghcr.io/acme", Mirrors: []string{"a.local"}, SourceFallback: true},
				{Source: "ghcr.io/acme", Mirrors: []string{"b.local"}, SourceFallback: true},
			},
			ref:  "ghcr.io/acme/web@" + dg,
			want: []string{"a.local/web@" + dg + " (mirror a.local)", "b.local/web@" + dg + " (mirror b.local)", "ghcr.io/acme/web@" + dg},
		},
		{
			name: "composition: fallback is per source, the longest match's sets alone",
			sets: []Set{
				{Source: "ghcr.io", Mirrors: []string{"plant.local/ghcr"}},
				{Source: "ghcr.io/acme", Mirrors: []string{"a.local"}, SourceFallback: true},
			},
			ref:  "ghcr.io/acme/web@" + dg,
			want: []string{"a.local/web@" + dg + " (mirror a.local)", "ghcr.io/acme/web@" + dg},
		},
		{
			name: "composition: a mirror allows tags when any set listing it does",
			sets: []Set{
				{Source: "ghcr.io/acme", Mirrors: []string{"a.local", "b.local"}},
				{Source: "ghcr.io/acme", Mirrors: []string{"b.local"}, AllowTags: true},
			},
			ref:  "ghcr.io/acme/web:v2",
			want: []string{"b.local/web:v2 (mirror b.local)"},
		},
		{
			name: "ipv6 hosts",
			sets: []Set{{Source: "[fd00::1]:5000", Mirrors: []string{"[fd00::2]:5000/up"}}},
			ref:  "[fd00::1]:5000/acme/web@" + dg,
			want: []string{"[fd00::2]:5000/up/acme/web@" + dg + " (mirror [fd00::2]:5000/up)"},
		},
		{
			name: "invalid host: nothing",
			sets: []Set{acme},
			ref:  "0_0.0/0",
			want: []string{},
		},
		{
			name: "unparsable reference: nothing",
			sets: []Set{acme},
			ref:  "ghcr.io/acme/Web@" + dg,
			want: []string{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(tc.sets)
			if err != nil {
				t.Fatal(err)
			}
			got := eps(r.Endpoints(tc.ref))
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("Endpoints(%s):\n got %q\nwant %q", tc.ref, got, tc.want)
			}
			for _, e := range r.Endpoints(tc.ref) {
				if e.ByTag != !strings.Contains(tc.ref, "@") {
					t.Errorf("%s: ByTag %v", e.Ref, e.ByTag)
				}
			}
		})
	}
}

// TestDigestOnly checks, over many set layouts, that a tag reference never
// goes to a mirror whose sets all leave allowTags off, and that the source
// is last exactly when sourceFallback allows it.
func TestDigestOnly(t *testing.T) {
	mirrors := []string{"a.local", "b.local/x", "c.local:5000"}
	for mask := 0; mask < 1<<len(mirrors); mask++ {
		for _, fallback := range []bool{false, true} {
			var sets []Set
			allowed := map[string]bool{}
			for i, m := range mirrors {
				allow := mask&(1<<i) != 0
				allowed[m] = allow
				sets = append(sets, Set{Source: "ghcr.io/acme", Mirrors: []string{m}, AllowTags: allow, SourceFallback: fallback})
			}
			r, err := New(sets)
			if err != nil {
				t.Fatal(err)
			}
			for _, ref := range []string{"ghcr.io/acme/web:v1", "ghcr.io/acme/web", "ghcr.io/acme/web:v1@" + dg} {
				list, err := r.Resolve(ref)
				digest := strings.Contains(ref, "@")
				n := 0
				for i, e := range list {
					if e.Mirror == "" {
						if i != len(list)-1 || !fallback {
							t.Errorf("mask %b fallback %v %s: source at %d of %d", mask, fallback, ref, i, len(list))
						}
						continue
					}
					n++
					if !digest && !allowed[e.Mirror] {
						t.Errorf("mask %b %s: tag sent to digest-only mirror %s", mask, ref, e.Mirror)
					}
				}
				want := 0
				for _, m := range mirrors {
					if digest || allowed[m] {
						want++
					}
				}
				if n != want {
					t.Errorf("mask %b fallback %v %s: %d mirrors, want %d: %q", mask, fallback, ref, n, want, eps(list))
				}
				if fallback && (len(list) == 0 || list[len(list)-1].Mirror != "") {
					t.Errorf("mask %b %s: fallback on, the source is not last: %q", mask, ref, eps(list))
				}
				switch {
				case len(list) == 0 && !errors.Is(err, ErrTagNeedsSource):
					t.Errorf("mask %b fallback %v %s: empty, err %v", mask, fallback, ref, err)
				case len(list) > 0 && err != nil:
					t.Errorf("mask %b %s: err %v with endpoints", mask, ref, err)
				case len(list) == 0 && (digest || fallback || mask != 0):
					t.Errorf("mask %b fallback %v %s: empty", mask, fallback, ref)
				}
			}
		}
	}
}

func TestResolveErrors(t *testing.T) {
	r, err := New([]Set{{Source: "ghcr.io/acme", Mirrors: []string{"a.local/acme"}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Resolve("ghcr.io/acme/web:v1")
	if !errors.Is(err, ErrTagNeedsSource) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"ghcr.io/acme/web:v1", "tag references cannot be fetched through digest-only mirrors and source fallback is off", "source ghcr.io/acme", "a.local/acme"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := r.Resolve("ghcr.io/acme/web@sha256:12"); err == nil || errors.Is(err, ErrTagNeedsSource) {
		t.Errorf("bad digest: %v", err)
	}
	if src, ok := r.Source("ghcr.io/acme/x/y@" + dg); !ok || src != "ghcr.io/acme" {
		t.Errorf("Source = %q, %v", src, ok)
	}
	if _, ok := r.Source("ghcr.io/acmecorp/y@" + dg); ok {
		t.Errorf("Source matched acmecorp")
	}
	var nilR *Resolver
	if got := eps(nilR.Endpoints("nginx:1")); len(got) != 1 || got[0] != "docker.io/library/nginx:1" {
		t.Errorf("nil resolver: %q", got)
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  Set
		want string
	}{
		{"scheme", Set{Source: "https://ghcr.io", Mirrors: []string{"a.local"}}, "not a registry host"},
		{"trailing slash", Set{Source: "ghcr.io/acme/", Mirrors: []string{"a.local"}}, "not a registry host"},
		{"tag", Set{Source: "ghcr.io/acme:v1", Mirrors: []string{"a.local"}}, "not a registry host"},
		{"uppercase path", Set{Source: "ghcr.io/Acme", Mirrors: []string{"a.local"}}, "not a registry host"},
		{"no mirrors", Set{Source: "ghcr.io/acme"}, "at least one mirror"},
		{"mirror is source", Set{Source: "ghcr.io/acme", Mirrors: []string{"GHCR.io/acme"}}, "the source itself"},
		{"mirror host without dot or port", Set{Source: "ghcr.io/acme", Mirrors: []string{"plant/acme"}}, "would read it as a repository on docker.io"},
		{"mirror digest", Set{Source: "ghcr.io/acme", Mirrors: []string{"a.local/acme@" + dg}}, "not a registry host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New([]Set{tc.set})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want %q", err, tc.want)
			}
		})
	}
	if r, err := New(nil); err != nil || len(r.Endpoints("ghcr.io/a/b@"+dg)) != 1 {
		t.Errorf("New(nil): %v", err)
	}
}

func TestMerge(t *testing.T) {
	for _, tc := range []struct {
		lists [][]string
		want  string
	}{
		{nil, ""},
		{[][]string{{"a", "b", "c"}}, "a b c"},
		{[][]string{{"a", "b"}, {"b", "c"}}, "a b c"},
		{[][]string{{"b", "c"}, {"a", "b"}}, "a b c"},
		{[][]string{{"a", "c"}, {"b", "c"}}, "a b c"},
		{[][]string{{"c"}, {"a", "b"}}, "c a b"},
		{[][]string{{"a", "b"}, {"b", "a"}}, "a b"},
		{[][]string{{"a", "b", "c"}, {"c", "a"}}, "a b c"},
		{[][]string{{"x", "y"}, {"z"}, {"y", "z", "x"}}, "x y z"},
		{[][]string{{"a", "a", "b"}}, "a b"},
	} {
		if got := strings.Join(merge(tc.lists), " "); got != tc.want {
			t.Errorf("merge(%q) = %q, want %q", tc.lists, got, tc.want)
		}
	}
}

// FuzzEndpoints checks that Endpoints never panics, that every endpoint
// fetches exactly the digest of the reference (a mirror never changes what
// is pulled), that a tag reference only reaches mirrors allowing tags, and
// that a mirror endpoint is under its mirror.
func FuzzEndpoints(f *testing.F) {
	for _, s := range []string{
		"ghcr.io/acme/web:v1@" + dg, "ghcr.io/acme/web:v1", "nginx", "nginx@" + dg2, "library/nginx:1",
		"ghcr.io/acmecorp/x@" + dg, "registry.local:5000/acme/web@" + dg, "[fd00::1]:5000/a@" + dg,
		"ghcr.io/acme", "ghcr.io/acme@" + dg, "", "@", ":", "ghcr.io/acme/web@sha512:" + strings.Repeat("a", 128),
		"index.docker.io/acme/x:1", "ghcr.io//x", "GHCR.IO/acme/w@" + dg,
	} {
		f.Add(s)
	}
	r, err := New([]Set{
		{Source: "ghcr.io", Mirrors: []string{"plant.local/ghcr"}, SourceFallback: true},
		{Source: "ghcr.io/acme", Mirrors: []string{"a.local/acme", "b.local:5000"}},
		{Source: "ghcr.io/acme", Mirrors: []string{"t.local/acme"}, AllowTags: true},
		{Source: "docker.io", Mirrors: []string{"hub.local"}, AllowTags: true, SourceFallback: true},
		{Source: "[fd00::1]:5000", Mirrors: []string{"localhost:5000"}},
		{Source: "registry.local:5000/acme", Mirrors: []string{"localhost/acme"}, SourceFallback: true},
	})
	if err != nil {
		f.Fatal(err)
	}
	tagMirrors := map[string]bool{"t.local/acme": true, "hub.local": true}
	f.Fuzz(func(t *testing.T, ref string) {
		list, rerr := r.Resolve(ref)
		in, perr := reference.ParseNormalizedNamed(ref)
		if perr != nil {
			if len(list) != 0 || rerr == nil {
				t.Fatalf("unparsable %q: %v, %v", ref, list, rerr)
			}
			return
		}
		var want string
		if d, ok := in.(reference.Digested); ok {
			want = d.Digest().String()
		}
		if len(list) == 0 && rerr == nil {
			t.Fatalf("%q: no endpoint and no error", ref)
		}
		for _, e := range list {
			if want != "" && !strings.HasSuffix(e.Ref, "@"+want) {
				t.Fatalf("%q: endpoint %q does not keep the digest %s", ref, e.Ref, want)
			}
			if want == "" && strings.Contains(e.Ref, "@") {
				t.Fatalf("%q: endpoint %q has a digest", ref, e.Ref)
			}
			if e.ByTag != (want == "") {
				t.Fatalf("%q: endpoint %q ByTag %v", ref, e.Ref, e.ByTag)
			}
			if e.Mirror != "" {
				if !strings.HasPrefix(e.Ref, e.Mirror) {
					t.Fatalf("%q: endpoint %q is not under its mirror %s", ref, e.Ref, e.Mirror)
				}
				if e.ByTag && !tagMirrors[e.Mirror] {
					t.Fatalf("%q: tag sent to digest-only mirror %s", ref, e.Mirror)
				}
			}
			if out, err := reference.ParseNormalizedNamed(e.Ref); err == nil {
				got := ""
				if d, ok := out.(reference.Digested); ok {
					got = d.Digest().String()
				}
				if got != want {
					t.Fatalf("%q: endpoint %q parses to digest %q, want %q", ref, e.Ref, got, want)
				}
			} else if len(e.Ref) <= 255 {
				t.Fatalf("%q: endpoint %q does not parse: %v", ref, e.Ref, err)
			}
		}
	})
}

func ExampleResolver_Endpoints() {
	r, err := New([]Set{{
		Source:         "ghcr.io/acme",
		Mirrors:        []string{"registry.plant.local/acme", "10.0.0.5:5000/acme"},
		SourceFallback: true,
	}})
	if err != nil {
		panic(err)
	}
	for _, e := range r.Endpoints("ghcr.io/acme/web:1.4.2@" + dg) {
		fmt.Printf("%q %s\n", e.Mirror, e.Ref)
	}
	fmt.Println(len(r.Endpoints("ghcr.io/acme/web:1.4.2")), r.Endpoints("ghcr.io/acme/web:1.4.2")[0].Ref)
	// Output:
	// "registry.plant.local/acme" registry.plant.local/acme/web:1.4.2@sha256:3f1c6e0e9d3a2b1c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4
	// "10.0.0.5:5000/acme" 10.0.0.5:5000/acme/web:1.4.2@sha256:3f1c6e0e9d3a2b1c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4
	// "" ghcr.io/acme/web:1.4.2@sha256:3f1c6e0e9d3a2b1c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4
	// 1 ghcr.io/acme/web:1.4.2
}
