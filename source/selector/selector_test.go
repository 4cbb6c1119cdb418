package selector

import (
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/source/oci"
)

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestSelect(t *testing.T) {
	mainTags := []string{
		"main-1a2b3c4-1700000100",
		"main-ffee001-1700000300", // newest
		"main-0000aaa-1700000050", // oldest
		"main-abcdef0-1700000200",
		"main-deadbee-notanumber",
		"feature-x-1a2b3c4-1800000000",
		"latest",
	}
	tests := []struct {
		name    string
		policy  Policy
		tags    []string
		want    string // tag
		version string
		value   string // checked when set
	}{
		{
			name:    "semver range",
			policy:  Policy{Semver: ">=1.4.0 <2.0.0"},
			tags:    []string{"1.3.0", "v1.4.0", "1.5.2", "v1.9.9", "2.0.0", "latest", "1.10.0-rc.1"},
			want:    "v1.9.9",
			version: "1.9.9",
			value:   "v1.9.9",
		},
		{
			name:    "v prefix in range and tag",
			policy:  Policy{Semver: "^v1.2"},
			tags:    []string{"v1.1.9", "v1.2.0", "v1.7.3", "v2.0.0"},
			want:    "v1.7.3",
			version: "1.7.3",
		},
		{
			name:    "numbers compared as numbers",
			policy:  Policy{Semver: "*"},
			tags:    []string{"1.9.0", "1.10.0", "1.2.0"},
			want:    "1.10.0",
			version: "1.10.0",
		},
		{
			name:    "coerced short versions",
			policy:  Policy{Semver: ">=1"},
			tags:    []string{"1.0.0", "1.2"},
			want:    "1.2",
			version: "1.2.0",
		},
		{
			name:    "pre-releases excluded by default",
			policy:  Policy{Semver: ">=1.0.0"},
			tags:    []string{"1.0.0", "1.1.0-rc.1", "1.1.0-alpha"},
			want:    "1.0.0",
			version: "1.0.0",
		},
		{
			name:    "pre-releases admitted with -0",
			policy:  Policy{Semver: ">=1.0.0-0"},
			tags:    []string{"1.0.0", "1.1.0-rc.1", "1.1.0-alpha"},
			want:    "1.1.0-rc.1",
			version: "1.1.0-rc.1",
		},
		{
			name:    "release beats its pre-release",
			policy:  Policy{Semver: ">=1.0.0-0"},
			tags:    []string{"1.1.0-rc.1", "1.1.0", "1.1.0-rc.2"},
			want:    "1.1.0",
			version: "1.1.0",
		},
		{
			name:    "tie v prefix: last in byte order",
			policy:  Policy{Semver: "1.x"},
			tags:    []string{"v1.0.0", "1.0.0"},
			want:    "v1.0.0",
			version: "1.0.0",
		},
		{
			name:    "tie v prefix, other list order",
			policy:  Policy{Semver: "1.x"},
			tags:    []string{"1.0.0", "v1.0.0"},
			want:    "v1.0.0",
			version: "1.0.0",
		},
		{
			name:    "tie build metadata",
			policy:  Policy{Semver: "1.x"},
			tags:    []string{"1.0.0+b", "1.0.0+a"},
			want:    "1.0.0+b",
			version: "1.0.0+b",
		},
		{
			name:    "semverFilter",
			policy:  Policy{Semver: ">=1.0.0", SemverFilter: "^v"},
			tags:    []string{"v1.0.0", "1.5.0", "v1.2.0"},
			want:    "v1.2.0",
			version: "1.2.0",
		},
		{
			name:    "semverFilter for a flavour",
			policy:  Policy{Semver: ">=1.0.0-0", SemverFilter: `-arm64$`},
			tags:    []string{"1.0.0-arm64", "1.3.0-amd64", "1.2.0-arm64"},
			want:    "1.2.0-arm64",
			version: "1.2.0-arm64",
		},
		{
			name:   "numerical timestamps asc picks the newest",
			policy: Policy{Pattern: `^main-[a-f0-9]+-(?P<ts>[0-9]+)$`, Extract: "$ts", Order: OrderNumerical},
			tags:   mainTags,
			want:   "main-ffee001-1700000300",
			value:  "1700000300",
		},
		{
			name:   "numerical explicit asc",
			policy: Policy{Pattern: `^main-[a-f0-9]+-(?P<ts>[0-9]+)$`, Extract: "${ts}", Order: OrderNumerical, Direction: DirectionAsc},
			tags:   mainTags,
			want:   "main-ffee001-1700000300",
		},
		{
			name:   "numerical desc picks the oldest",
			policy: Policy{Pattern: `^main-[a-f0-9]+-(?P<ts>[0-9]+)$`, Extract: "$ts", Order: OrderNumerical, Direction: DirectionDesc},
			tags:   mainTags,
			want:   "main-0000aaa-1700000050",
			value:  "1700000050",
		},
		{
			name:   "numbered group, non-numbers skipped",
			policy: Policy{Pattern: `^main-[a-f0-9]+-(.+)$`, Extract: "$1", Order: OrderNumerical},
			tags:   mainTags,
			want:   "main-ffee001-1700000300",
		},
		{
			name:   "numerical beyond float precision",
			policy: Policy{Pattern: `^b(\d+)$`, Extract: "$1", Order: OrderNumerical},
			tags:   []string{"b9007199254740993", "b9007199254740992"},
			want:   "b9007199254740993",
		},
		{
			name:   "numerical decimals and signs",
			policy: Policy{Pattern: `^r(.*)$`, Extract: "$1", Order: OrderNumerical},
			tags:   []string{"r1.5", "r1.25", "r-3", "r1e0", "rNaN", "rInf"},
			want:   "r1.5",
		},
		{
			name:   "numerical whole tag",
			policy: Policy{Pattern: `^\d+$`, Order: OrderNumerical},
			tags:   []string{"9", "10", "100a", "latest"},
			want:   "10",
			value:  "10",
		},
		{
			name:   "numerical tie broken by tag",
			policy: Policy{Pattern: `^\w+-(?P<n>\d+)$`, Extract: "$n", Order: OrderNumerical},
			tags:   []string{"b-5", "a-5", "c-4"},
			want:   "b-5",
		},
		{
			name:   "numerical tie broken by tag in desc too",
			policy: Policy{Pattern: `^\w+-(?P<n>\d+)$`, Extract: "$n", Order: OrderNumerical, Direction: DirectionDesc},
			tags:   []string{"a-4", "c-5", "b-4"},
			want:   "b-4",
		},
		{
			name:   "alphabetical asc",
			policy: Policy{Pattern: `^build-(?P<date>\d{4}-\d{2}-\d{2})`, Extract: "$date", Order: OrderAlphabetical},
			tags:   []string{"build-2024-01-10-x", "build-2024-02-01-y", "build-2023-12-31-z", "other"},
			want:   "build-2024-02-01-y",
			value:  "2024-02-01",
		},
		{
			name:   "alphabetical desc",
			policy: Policy{Pattern: `^build-(?P<date>\d{4}-\d{2}-\d{2})`, Extract: "$date", Order: OrderAlphabetical, Direction: DirectionDesc},
			tags:   []string{"build-2024-01-10-x", "build-2024-02-01-y", "build-2023-12-31-z", "other"},
			want:   "build-2023-12-31-z",
		},
		{
			name:   "alphabetical template with text",
			policy: Policy{Pattern: `^(?P<y>\d{4})\.(?P<m>\d{2})-`, Extract: "$y-${m}", Order: OrderAlphabetical},
			tags:   []string{"2024.01-a", "2023.12-b"},
			want:   "2024.01-a",
			value:  "2024-01",
		},
		{
			name:    "semver order on extracted value",
			policy:  Policy{Pattern: `^release-(?P<v>.+)$`, Extract: "$v", Order: OrderSemver},
			tags:    []string{"release-1.2.0", "release-1.10.0", "release-2.0.0-rc.1", "release-x", "1.99.0"},
			want:    "release-1.10.0",
			version: "1.10.0",
			value:   "1.10.0",
		},
		{
			name:    "semver order with range implies semver order",
			policy:  Policy{Pattern: `^release-(?P<v>.+)$`, Extract: "$v", Semver: "<1.5.0"},
			tags:    []string{"release-1.2.0", "release-1.10.0", "release-1.4.9"},
			want:    "release-1.4.9",
			version: "1.4.9",
		},
		{
			name:    "semver order with range admitting pre-releases",
			policy:  Policy{Pattern: `^release-(?P<v>.+)$`, Extract: "$v", Order: OrderSemver, Semver: ">=1.0.0-0"},
			tags:    []string{"release-1.2.0", "release-2.0.0-rc.1"},
			want:    "release-2.0.0-rc.1",
			version: "2.0.0-rc.1",
		},
		{
			name:    "semver order desc",
			policy:  Policy{Pattern: `^release-(?P<v>.+)$`, Extract: "$v", Order: OrderSemver, Direction: DirectionDesc},
			tags:    []string{"release-1.2.0", "release-1.10.0", "release-1.0.1"},
			want:    "release-1.0.1",
			version: "1.0.1",
		},
		{
			name:   "unanchored pattern",
			policy: Policy{Pattern: `rc(\d+)`, Extract: "$1", Order: OrderNumerical},
			tags:   []string{"v1-rc2", "v1-rc10-extra"},
			want:   "v1-rc10-extra",
		},
		{
			name:   "signature tags ignored",
			policy: Policy{Pattern: `.*`, Order: OrderAlphabetical},
			tags: []string{
				"a", "b",
				"sha256-" + hex64, "sha256-" + hex64 + ".sig", "sha256-" + hex64 + ".att", "sha256-" + hex64 + ".sbom",
			},
			want: "b",
		},
		{
			name:   "near-signature tags are ordinary",
			policy: Policy{Pattern: `.*`, Order: OrderAlphabetical},
			tags:   []string{"a", "sha256-" + hex64 + ".foo", "sha256-" + strings.ToUpper(hex64)},
			want:   "sha256-" + hex64 + ".foo",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.policy)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			// The pick does not depend on the order of the list.
			for _, tags := range [][]string{tt.tags, reversed(tt.tags)} {
				got, err := s.Select(tags)
				if err != nil {
					t.Fatalf("Select: %v", err)
				}
				if got.Tag != tt.want || got.Version != tt.version {
					t.Errorf("Select(%q) = %+v, want tag %q version %q", tags, got, tt.want, tt.version)
				}
				if tt.value != "" && got.Value != tt.value {
					t.Errorf("value = %q, want %q", got.Value, tt.value)
				}
			}
		})
	}
}

func reversed(s []string) []string {
	r := slices.Clone(s)
	slices.Reverse(r)
	return r
}

func TestSelectNoMatch(t *testing.T) {
	tags37 := make([]string, 37)
	for i := range tags37 {
		tags37[i] = fmt.Sprintf("1.%d.0", i)
	}
	tests := []struct {
		name   string
		policy Policy
		tags   []string
		want   string
	}{
		{
			name:   "range",
			policy: Policy{Semver: ">=2.0.0"},
			tags:   tags37,
			want:   `no tag of 37 matches semver ">=2.0.0" (highest version found: 1.36.0 in tag "1.36.0")`,
		},
		{
			name:   "empty list",
			policy: Policy{Semver: ">=2.0.0"},
			want:   `no tag of 0 matches semver ">=2.0.0" (the list is empty)`,
		},
		{
			name:   "only signatures",
			policy: Policy{Semver: ">=2.0.0"},
			tags:   []string{"sha256-" + hex64, "sha256-" + hex64 + ".sig"},
			want:   `no tag of 0 matches semver ">=2.0.0" (2 signature tag(s) ignored)`,
		},
		{
			name:   "no semantic version",
			policy: Policy{Semver: ">=1.0.0"},
			tags:   []string{"latest", "stable", "sha256-" + hex64 + ".sig"},
			want:   `no tag of 2 matches semver ">=1.0.0" (none is a semantic version; 1 signature tag(s) ignored)`,
		},
		{
			name:   "pre-releases only",
			policy: Policy{Semver: ">=1.0.0"},
			tags:   []string{"1.0.0-rc.1", "1.1.0-rc.1", "0.9.0"},
			want:   `no tag of 3 matches semver ">=1.0.0" (highest version found: 1.1.0-rc.1 in tag "1.1.0-rc.1"; 1 pre-release(s) in range left out: a range admits pre-releases with a -0 suffix, such as ">=1.0.0-0")`,
		},
		{
			name:   "semverFilter",
			policy: Policy{Semver: ">=1.0.0", SemverFilter: "^v"},
			tags:   []string{"1.0.0", "2.0.0"},
			want:   `no tag of 2 matches semver ">=1.0.0" and semverFilter "^v" (none matches semverFilter)`,
		},
		{
			name:   "pattern",
			policy: Policy{Pattern: `^main-(?P<ts>\d+)$`, Extract: "$ts", Order: OrderNumerical},
			tags:   []string{"latest", "1.0.0"},
			want:   `no tag of 2 matches pattern "^main-(?P<ts>\\d+)$" (extract "$ts", order numerical, direction asc)`,
		},
		{
			name:   "pattern matches but no number",
			policy: Policy{Pattern: `^main-(?P<ts>.+)$`, Extract: "$ts", Order: OrderNumerical, Direction: DirectionDesc},
			tags:   []string{"main-x", "main-y", "other"},
			want:   `no tag of 3 matches pattern "^main-(?P<ts>.+)$" (extract "$ts", order numerical, direction desc) (2 match the pattern but no extracted value is a number)`,
		},
		{
			name:   "pattern matches but no version",
			policy: Policy{Pattern: `^release-(?P<v>.+)$`, Extract: "$v", Semver: ">=1"},
			tags:   []string{"release-x"},
			want:   `no tag of 1 matches pattern "^release-(?P<v>.+)$" (extract "$v", order semver, direction asc, semver ">=1") (1 match the pattern but no extracted value is a semantic version)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.policy)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Select(tt.tags)
			if err == nil {
				t.Fatalf("Select = %+v, want an error", got)
			}
			if !errors.Is(err, ErrNoMatch) {
				t.Errorf("error %v does not wrap ErrNoMatch", err)
			}
			if err.Error() != tt.want {
				t.Errorf("error:\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

func TestNewInvalid(t *testing.T) {
	tests := []struct {
		name   string
		policy Policy
		want   []string // "field: message", in order
	}{
		{name: "empty", want: []string{"semver: a tag policy needs a semver range or a pattern"}},
		{
			name:   "bad range",
			policy: Policy{Semver: ">=1.x.y"},
			want:   []string{`semver: invalid semver range ">=1.x.y" (write ranges such as ">=1.4.0 <2.0.0", "~1.4" or "^1"; a -0 suffix admits pre-releases)`},
		},
		{
			name:   "range too long",
			policy: Policy{Semver: strings.Repeat(">=1 ", 200)},
			want:   []string{`semver: invalid semver range "` + strings.Repeat(">=1 ", 200) + `": constraint string is too long (max 512 bytes) (write ranges`},
		},
		{
			name:   "semverFilter without semver",
			policy: Policy{SemverFilter: "^v", Pattern: ".*", Order: OrderAlphabetical},
			want:   []string{"semverFilter: only applies with a semver range"},
		},
		{
			name:   "bad semverFilter",
			policy: Policy{Semver: "*", SemverFilter: "^(v"},
			want:   []string{`semverFilter: invalid regular expression "^(v": missing closing )`},
		},
		{
			name:   "bad pattern",
			policy: Policy{Pattern: "main-[a-", Order: OrderNumerical},
			want:   []string{`pattern: invalid regular expression "main-[a-": missing closing ] in "[a-"`},
		},
		{
			name:   "order missing",
			policy: Policy{Pattern: ".*"},
			want:   []string{"order: is required with a pattern: semver, numerical or alphabetical"},
		},
		{
			name:   "order unknown",
			policy: Policy{Pattern: ".*", Order: "Numerical", Direction: "up"},
			want:   []string{`order: must be semver, numerical or alphabetical, got "Numerical"`, `direction: must be asc or desc, got "up"`},
		},
		{
			name:   "range with numerical order",
			policy: Policy{Pattern: ".*", Order: OrderNumerical, Semver: ">=1"},
			want:   []string{`order: must be semver with a semver range, got "numerical"`},
		},
		{
			name:   "filter fields without pattern",
			policy: Policy{Semver: ">=1", Extract: "$ts", Order: OrderSemver, Direction: DirectionAsc},
			want:   []string{"extract: only applies with a pattern", "order: only applies with a pattern", "direction: only applies with a pattern"},
		},
		{
			name:   "extract unknown name",
			policy: Policy{Pattern: `^main-(?P<ts>\d+)-(?P<sha>[a-f0-9]+)$`, Extract: "$time", Order: OrderNumerical},
			want:   []string{`extract: "$time" refers to the group "time" that pattern "^main-(?P<ts>\\d+)-(?P<sha>[a-f0-9]+)$" does not have (its named groups: ts, sha)`},
		},
		{
			name:   "extract name runs on",
			policy: Policy{Pattern: `^main-(?P<ts>\d+)$`, Extract: "$ts_x", Order: OrderAlphabetical},
			want:   []string{`extract: "$ts_x" refers to the group "ts_x" that pattern "^main-(?P<ts>\\d+)$" does not have (its named groups: ts); write ${ts}_x to end the name earlier`},
		},
		{
			name:   "extract without named groups",
			policy: Policy{Pattern: `^main-(\d+)$`, Extract: "$ts", Order: OrderNumerical},
			want:   []string{`extract: "$ts" refers to the group "ts" that pattern "^main-(\\d+)$" does not have (it has no named group: write (?P<name>...))`},
		},
		{
			name:   "extract group number too high",
			policy: Policy{Pattern: `^main-(\d+)$`, Extract: "$2", Order: OrderNumerical},
			want:   []string{`extract: "$2" refers to group 2 but pattern "^main-(\\d+)$" has 1`},
		},
		{
			name:   "extract bad syntax",
			policy: Policy{Pattern: `^main-(?P<ts>\d+)$`, Extract: "${ts", Order: OrderNumerical},
			want:   []string{`extract: "${ts" has a $ at offset 0 that names no group: write $name, ${name} or $1, and $$ for a literal $`},
		},
		{
			name:   "extract trailing dollar",
			policy: Policy{Pattern: `^main-(?P<ts>\d+)$`, Extract: "$ts$", Order: OrderNumerical},
			want:   []string{`extract: "$ts$" has a $ at offset 3 that names no group`},
		},
		{
			name:   "extract without reference",
			policy: Policy{Pattern: `^main-(?P<ts>\d+)$`, Extract: "ts$$", Order: OrderNumerical},
			want:   []string{`extract: "ts$$" refers to no group of the pattern: use $name or ${name}, such as $ts`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.policy)
			if err == nil {
				t.Fatalf("New = %+v, want an error", s)
			}
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Errorf("%v does not wrap ErrInvalidPolicy", err)
			}
			errs := err.(interface{ Unwrap() []error }).Unwrap()
			if len(errs) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(tt.want), err)
			}
			for i, e := range errs {
				var pe *PolicyError
				if !errors.As(e, &pe) {
					t.Fatalf("%v is not a *PolicyError", e)
				}
				if !strings.HasPrefix(e.Error(), tt.want[i]) {
					t.Errorf("error %d:\n got %s\nwant %s...", i, e, tt.want[i])
				}
			}
		})
	}
}

func TestExtractRefMatchesExpand(t *testing.T) {
	// Every template checkExtract accepts expands to the groups it names.
	re := mustCompile(t, `^(?P<a>x)(?P<b_1>y)(z)$`)
	m := re.FindStringSubmatchIndex("xyz")
	for tmpl, want := range map[string]string{
		"$a":          "x",
		"${a}":        "x",
		"$b_1":        "y",
		"${b_1}$3":    "yz",
		"$0":          "xyz",
		"$$$a":        "$x",
		"pre-${a}-$3": "pre-x-z",
	} {
		if msg := checkExtract(re, tmpl); msg != "" {
			t.Errorf("checkExtract(%q) = %s", tmpl, msg)
		}
		if got := string(re.ExpandString(nil, tmpl, "xyz", m)); got != want {
			t.Errorf("expand %q = %q, want %q", tmpl, got, want)
		}
	}
	for _, tmpl := range []string{"$c", "$4", "$01", "${a", "$", "a$-", "$a$", "x"} {
		if checkExtract(re, tmpl) == "" {
			t.Errorf("checkExtract(%q) accepted it", tmpl)
		}
	}
}

func TestPolicy(t *testing.T) {
	s, err := New(Policy{Pattern: "x", Semver: "*"})
	if err != nil {
		t.Fatal(err)
	}
	if p := s.Policy(); p.Order != OrderSemver || p.Direction != DirectionAsc {
		t.Errorf("Policy() = %+v", p)
	}
	s, err = New(Policy{Semver: "*"})
	if err != nil {
		t.Fatal(err)
	}
	if p := s.Policy(); p.Order != OrderSemver || p.Direction != "" {
		t.Errorf("Policy() = %+v", p)
	}
}

func TestIsSignatureTag(t *testing.T) {
	for tag, want := range map[string]bool{
		"sha256-" + hex64:                  true,
		"sha256-" + hex64 + ".sig":         true,
		"sha256-" + hex64 + ".att":         true,
		"sha256-" + hex64 + ".sbom":        true,
		"sha256-" + hex64 + ".sigx":        false,
		"sha256-" + hex64[:63]:             false,
		"sha256-" + hex64[:63] + "g":       false,
		"sha256-" + hex64 + "0":            false,
		"sha512-" + hex64 + hex64:          false,
		"sha256-" + strings.ToUpper(hex64): false,
		"latest":                           false,
		"":                                 false,
	} {
		if got := oci.IsSignatureTag(tag); got != want {
			t.Errorf("IsSignatureTag(%q) = %v", tag, got)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.0.0", "1.0.1", -1},
		{"v1.2.0", "1.2.0", 0},
		{"1.2.0+build.1", "1.2.0+build.2", 0},
		{"2.0.0-rc.1", "2.0.0", -1},
		{"2.0.0-rc.10", "2.0.0-rc.9", 1},
		{"1.10.0", "1.9.0", 1},
	}
	for _, tt := range tests {
		got, err := CompareVersions(tt.a, tt.b)
		if err != nil || got != tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, %v; want %d", tt.a, tt.b, got, err, tt.want)
		}
	}
	for _, bad := range [][2]string{{"latest", "1.0.0"}, {"1.0.0", ""}} {
		_, err := CompareVersions(bad[0], bad[1])
		if !errors.Is(err, ErrInvalidVersion) {
			t.Errorf("CompareVersions(%q, %q) error = %v", bad[0], bad[1], err)
		}
	}
	_, err := CompareVersions("1.0.0", "nope")
	if err == nil || !strings.Contains(err.Error(), `invalid semantic version "nope"`) {
		t.Errorf("error = %v", err)
	}
}

// TestSelectManyTags picks out of 10,000 tags, shuffled, as a busy CI
// repository would list them.
func TestSelectManyTags(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	const n = 10000
	var tags []string
	for i := range n {
		switch i % 4 {
		case 0:
			tags = append(tags, fmt.Sprintf("main-%07x-%d", r.Intn(1<<28), 1700000000+i))
		case 1:
			tags = append(tags, fmt.Sprintf("%d.%d.%d", i%7, i%100, i))
		case 2:
			tags = append(tags, fmt.Sprintf("v%d.%d.%d-rc.%d", i%7, i%100, i, i%3))
		default:
			tags = append(tags, fmt.Sprintf("sha256-%064x.sig", i))
		}
	}
	r.Shuffle(len(tags), func(i, j int) { tags[i], tags[j] = tags[j], tags[i] })

	tests := []struct {
		policy Policy
		want   string
	}{
		// Numerical: the largest timestamp is 1700000000+9996.
		{Policy{Pattern: `^main-[a-f0-9]+-(?P<ts>[0-9]+)$`, Extract: "$ts", Order: OrderNumerical}, "-1700009996"},
		{Policy{Pattern: `^main-[a-f0-9]+-(?P<ts>[0-9]+)$`, Extract: "$ts", Order: OrderNumerical, Direction: DirectionDesc}, "-1700000000"},
		// Releases i%4 == 1: the highest 6.x.y has i%7 == 6; among those the
		// highest minor i%100 == 97 (i = 97+100k, i%7==6, i%4==1).
		{Policy{Semver: ">=0.0.0"}, highestRelease(n)},
		{Policy{Semver: ">=0.0.0-0", SemverFilter: "^v"}, highestRC(n)},
	}
	for _, tt := range tests {
		s, err := New(tt.policy)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		got, err := s.Select(tags)
		elapsed := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(got.Tag, tt.want) {
			t.Errorf("%v: got %q, want %q", tt.policy, got.Tag, tt.want)
		}
		t.Logf("%v: %d tags in %v", tt.policy, len(tags), elapsed)
		if elapsed > 5*time.Second {
			t.Errorf("selecting out of %d tags took %v", len(tags), elapsed)
		}
	}
}

// highestRelease computes the expected pick of the release tags of
// TestSelectManyTags the slow way.
func highestRelease(n int) string {
	best := [3]int{-1}
	for i := range n {
		if i%4 != 1 {
			continue
		}
		v := [3]int{i % 7, i % 100, i}
		if v[0] > best[0] || v[0] == best[0] && (v[1] > best[1] || v[1] == best[1] && v[2] > best[2]) {
			best = v
		}
	}
	return fmt.Sprintf("%d.%d.%d", best[0], best[1], best[2])
}

// highestRC does the same for the release candidates, which are all
// pre-releases of distinct versions.
func highestRC(n int) string {
	best := [4]int{-1}
	for i := range n {
		if i%4 != 2 {
			continue
		}
		v := [4]int{i % 7, i % 100, i, i % 3}
		if v[0] > best[0] || v[0] == best[0] && (v[1] > best[1] || v[1] == best[1] && v[2] > best[2]) {
			best = v
		}
	}
	return fmt.Sprintf("v%d.%d.%d-rc.%d", best[0], best[1], best[2], best[3])
}

func BenchmarkSelect10000(b *testing.B) {
	tags := make([]string, 10000)
	for i := range tags {
		tags[i] = fmt.Sprintf("main-%07x-%d", i*7919, 1700000000+i)
	}
	s, err := New(Policy{Pattern: `^main-[a-f0-9]+-(?P<ts>[0-9]+)$`, Extract: "$ts", Order: OrderNumerical})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Select(tags); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSelectSemver10000(b *testing.B) {
	tags := make([]string, 10000)
	for i := range tags {
		tags[i] = fmt.Sprintf("v%d.%d.%d", i/1000, i/100%10, i%100)
	}
	s, err := New(Policy{Semver: ">=1.0.0 <9.0.0"})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Select(tags); err != nil {
			b.Fatal(err)
		}
	}
}

func TestPolicyErrors(t *testing.T) {
	_, err := New(Policy{Pattern: "(", Order: "sideways", SemverFilter: "x"})
	var got []string
	for _, pe := range PolicyErrors(err) {
		got = append(got, pe.Field)
	}
	if strings.Join(got, ",") != "semverFilter,pattern,order" {
		t.Errorf("PolicyErrors fields = %v (err %v), want semverFilter,pattern,order", got, err)
	}
	if PolicyErrors(errors.New("other")) != nil {
		t.Error("PolicyErrors of an error without one is not empty")
	}
}
