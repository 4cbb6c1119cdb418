package selector

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/source/oci"
)

func mustCompile(t *testing.T, expr string) *regexp.Regexp {
	t.Helper()
	re, err := regexp.Compile(expr)
	if err != nil {
		t.Fatal(err)
	}
	return re
}

// FuzzSelect checks that New and Select never panic, that a pick is one of
// the tags and never a signature tag, and that it does not depend on the
// order of the list.
func FuzzSelect(f *testing.F) {
	seeds := []struct {
		semver, semverFilter, pattern, extract, order, direction, tags string
	}{
		{">=1.0.0 <2.0.0", "", "", "", "", "", "1.0.0\nv1.5.0\n2.0.0\nlatest"},
		{">=1.0.0-0", "^v", "", "", "", "", "v1.0.0-rc.1\n1.2.0\nv1.1.0"},
		{"", "", `^main-[a-f0-9]+-(?P<ts>[0-9]+)$`, "$ts", "numerical", "asc", "main-abc-17\nmain-def-18\nsha256-" + hex64 + ".sig"},
		{"", "", `^b-(\d+)$`, "${1}", "numerical", "desc", "b-1\nb-2\nb-1.5\nb-x"},
		{"", "", `(?P<d>\d{4}-\d{2})`, "$d", "alphabetical", "", "2024-01\n2023-12\nx"},
		{"<2", "", `^r-(?P<v>.*)$`, "$v", "", "", "r-1.0.0\nr-1.9.9\nr-2.0.0"},
		{"", "", ".*", "", "semver", "desc", "1\n2\n3\n1.0.0+x\nv1.0.0"},
	}
	for _, s := range seeds {
		f.Add(s.semver, s.semverFilter, s.pattern, s.extract, s.order, s.direction, s.tags)
	}
	f.Fuzz(func(t *testing.T, sv, svf, pattern, extract, order, direction, tagList string) {
		p := Policy{Semver: sv, SemverFilter: svf, Pattern: pattern, Extract: extract, Order: order, Direction: direction}
		s, err := New(p)
		if err != nil {
			if s != nil {
				t.Fatal("a selector returned with an error")
			}
			return
		}
		_ = p.String()
		tags := strings.Split(tagList, "\n")
		got, err := s.Select(tags)
		if err != nil {
			if got != (Selection{}) {
				t.Fatalf("a selection returned with an error: %+v", got)
			}
			return
		}
		if !slices.Contains(tags, got.Tag) || oci.IsSignatureTag(got.Tag) {
			t.Fatalf("picked %q out of %q", got.Tag, tags)
		}
		if got.Version != "" {
			if c, err := CompareVersions(got.Version, got.Version); err != nil || c != 0 {
				t.Fatalf("version %q does not compare to itself: %d, %v", got.Version, c, err)
			}
		}
		rev := slices.Clone(tags)
		slices.Reverse(rev)
		again, err := s.Select(rev)
		if err != nil || again != got {
			t.Fatalf("reversed list: %+v, %v; want %+v", again, err, got)
		}
	})
}
