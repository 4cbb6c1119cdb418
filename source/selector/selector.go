// Package selector picks the tag a source tracks out of a repository's tag
// list: a semver range or the Flux ImagePolicy filter/extract/order model.
//
// A Policy works in one of two modes:
//
//   - Semver mode (Semver set, Pattern empty): every tag that matches
//     SemverFilter (when set) and parses as a semantic version (a leading
//     "v" is allowed, "1.2" reads as 1.2.0) is a candidate if it satisfies
//     the Semver range; the highest version wins. Ranges follow
//     github.com/Masterminds/semver/v3: pre-releases are left out unless the
//     range itself carries one, so ">=1.4.0-0" admits 1.5.0-rc.1 and
//     ">=1.4.0" does not.
//   - Filter mode (Pattern set): every tag the Pattern regular expression
//     matches is a candidate; its value is Extract expanded with the
//     pattern's groups as regexp.Regexp.Expand does ($name, ${name}, $1), or
//     the whole tag when Extract is empty. Values are ordered by Order:
//     "semver" (values that are not semantic versions, or that fall out of
//     the Semver range when one is set, are skipped; without a range,
//     pre-releases are left out as with the range "*"), "numerical" (values
//     that are not numbers are skipped) or "alphabetical" (byte order). With
//     Direction "asc", the default, the greatest value is the newest, as
//     with Flux's order: asc; with "desc" the smallest one is.
//
// Ties between tags of equal value (v1.0.0 and 1.0.0, 1.0.0+a and 1.0.0+b,
// or the same extracted value) are broken by the tag itself: the tag that
// sorts last in byte order wins, whatever the direction, so the pick does
// not depend on the order of the list.
//
// Signature, attestation and SBOM tags that cosign writes next to an
// artifact (sha256-<hex>, sha256-<hex>.sig, .att, .sbom) are never
// candidates.
package selector

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/Masterminds/semver/v3"

	"github.com/berth-dev/berth/source/oci"
)

// Orders and directions of a Policy.
const (
	// OrderSemver orders values as semantic versions.
	OrderSemver = "semver"
	// OrderNumerical orders values as numbers (integers or decimals).
	OrderNumerical = "numerical"
	// OrderAlphabetical orders values in byte order.
	OrderAlphabetical = "alphabetical"

	// DirectionAsc makes the greatest value the newest (the default).
	DirectionAsc = "asc"
	// DirectionDesc makes the smallest value the newest.
	DirectionDesc = "desc"
)

// Policy says which tag of a repository to track. Its fields are named as
// in the agent's configuration (ref.semver, ref.semverFilter and the filter
// block).
type Policy struct {
	// Semver is a Masterminds semver range, such as ">=1.4.0 <2.0.0". Alone,
	// it selects semver mode; with Pattern, it bounds the extracted values
	// and implies Order "semver".
	Semver string
	// SemverFilter is a regular expression a tag must match to be
	// considered; it needs Semver.
	SemverFilter string
	// Pattern is a regular expression a tag must match to be considered; it
	// selects filter mode.
	Pattern string
	// Extract is the value of a tag, a template such as "$ts" or "${ts}"
	// that names groups of Pattern. Empty: the whole tag.
	Extract string
	// Order is how values are ordered: OrderSemver, OrderNumerical or
	// OrderAlphabetical. Required with Pattern unless Semver is set.
	Order string
	// Direction is DirectionAsc (the default) or DirectionDesc.
	Direction string
}

// String describes the policy for messages, such as `semver ">=2.0.0"` or
// `pattern "^main-" (extract "$ts", order numerical, direction asc)`.
func (p Policy) String() string {
	if p.Pattern == "" {
		s := fmt.Sprintf("semver %q", p.Semver)
		if p.SemverFilter != "" {
			s += fmt.Sprintf(" and semverFilter %q", p.SemverFilter)
		}
		return s
	}
	var parts []string
	if p.Extract != "" {
		parts = append(parts, fmt.Sprintf("extract %q", p.Extract))
	}
	if p.Order != "" {
		parts = append(parts, "order "+p.Order)
	}
	if p.Direction != "" {
		parts = append(parts, "direction "+p.Direction)
	}
	if p.Semver != "" {
		parts = append(parts, fmt.Sprintf("semver %q", p.Semver))
	}
	if p.SemverFilter != "" {
		parts = append(parts, fmt.Sprintf("semverFilter %q", p.SemverFilter))
	}
	s := fmt.Sprintf("pattern %q", p.Pattern)
	if len(parts) > 0 {
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s
}

// Selector is a validated Policy. It is safe for concurrent use.
type Selector struct {
	policy       Policy
	constraint   *semver.Constraints // nil in filter mode without a range
	semverFilter *regexp.Regexp      // nil when not set
	pattern      *regexp.Regexp      // nil in semver mode
}

// Selection is the tag a Selector picked.
type Selection struct {
	// Tag is the tag, as listed.
	Tag string
	// Version is the parsed semantic version of the tag (semver mode) or of
	// its extracted value (filter mode with Order "semver"), normalized by
	// Masterminds semver: without a leading "v", with three numbers. It is
	// empty with the numerical and alphabetical orders. Compare two of them
	// with CompareVersions.
	Version string
	// Value is what was ordered: the extracted value in filter mode, the
	// tag in semver mode.
	Value string
}

// New validates p and returns its Selector. All the problems found are
// returned at once, joined, each a *PolicyError wrapping ErrInvalidPolicy.
func New(p Policy) (*Selector, error) {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &PolicyError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	s := &Selector{}
	if p.Semver == "" && p.Pattern == "" {
		add("semver", "a tag policy needs a semver range or a pattern")
	}
	if p.Semver != "" {
		c, err := semver.NewConstraint(p.Semver)
		if err != nil {
			why := ": " + err.Error()
			if strings.HasPrefix(why, ": improper constraint") {
				why = ""
			}
			add("semver", "invalid semver range %q%s (write ranges such as \">=1.4.0 <2.0.0\", \"~1.4\" or \"^1\"; a -0 suffix admits pre-releases)", p.Semver, why)
		} else {
			s.constraint = c
		}
	}
	if p.SemverFilter != "" {
		if p.Semver == "" {
			add("semverFilter", "only applies with a semver range")
		} else if re, err := regexp.Compile(p.SemverFilter); err != nil {
			add("semverFilter", "%s", regexpMsg(p.SemverFilter, err))
		} else {
			s.semverFilter = re
		}
	}
	if p.Pattern != "" {
		re, err := regexp.Compile(p.Pattern)
		if err != nil {
			add("pattern", "%s", regexpMsg(p.Pattern, err))
		} else {
			s.pattern = re
			if p.Extract != "" {
				if msg := checkExtract(re, p.Extract); msg != "" {
					add("extract", "%s", msg)
				}
			}
		}
		switch p.Order {
		case "":
			if p.Semver != "" {
				p.Order = OrderSemver
			} else {
				add("order", "is required with a pattern: semver, numerical or alphabetical")
			}
		case OrderSemver:
		case OrderNumerical, OrderAlphabetical:
			if p.Semver != "" {
				add("order", "must be semver with a semver range, got %q", p.Order)
			}
		default:
			add("order", "must be semver, numerical or alphabetical, got %q", p.Order)
		}
		switch p.Direction {
		case "":
			p.Direction = DirectionAsc
		case DirectionAsc, DirectionDesc:
		default:
			add("direction", "must be asc or desc, got %q", p.Direction)
		}
		if p.Order == OrderSemver && s.constraint == nil && p.Semver == "" {
			// Without a range, leave pre-releases out as every range does.
			s.constraint, _ = semver.NewConstraint("*")
		}
	} else {
		for _, f := range []struct{ name, val string }{{"extract", p.Extract}, {"order", p.Order}, {"direction", p.Direction}} {
			if f.val != "" {
				add(f.name, "only applies with a pattern")
			}
		}
		p.Order = OrderSemver
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	s.policy = p
	return s, nil
}

// Policy returns the policy of s with its defaults filled in: Order is
// always set, and Direction too in filter mode.
func (s *Selector) Policy() Policy { return s.policy }

// regexpMsg describes a regular expression that does not compile.
func regexpMsg(expr string, err error) string {
	var se *syntax.Error
	if errors.As(err, &se) {
		msg := fmt.Sprintf("invalid regular expression %q: %s", expr, se.Code)
		if se.Expr != "" && se.Expr != expr {
			msg += fmt.Sprintf(" in %q", se.Expr)
		}
		return msg
	}
	return fmt.Sprintf("invalid regular expression %q: %v", expr, err)
}

// checkExtract checks that every $ reference of the template tmpl names a
// group of re, as regexp.Regexp.Expand resolves them, and that there is at
// least one. It returns what is wrong, or "".
func checkExtract(re *regexp.Regexp, tmpl string) string {
	refs := 0
	for i := 0; i < len(tmpl); {
		j := strings.IndexByte(tmpl[i:], '$')
		if j < 0 {
			break
		}
		i += j
		if i+1 < len(tmpl) && tmpl[i+1] == '$' {
			i += 2
			continue
		}
		name, num, n, ok := extractRef(tmpl[i+1:])
		if !ok {
			return fmt.Sprintf("%q has a $ at offset %d that names no group: write $name, ${name} or $1, and $$ for a literal $", tmpl, i)
		}
		switch {
		case num > re.NumSubexp():
			return fmt.Sprintf("%q refers to group %d but pattern %q has %d", tmpl, num, re.String(), re.NumSubexp())
		case num < 0 && re.SubexpIndex(name) < 0:
			msg := fmt.Sprintf("%q refers to the group %q that pattern %q does not have", tmpl, name, re.String())
			var names []string
			for _, n := range re.SubexpNames() {
				if n != "" {
					names = append(names, n)
				}
			}
			if len(names) > 0 {
				msg += fmt.Sprintf(" (its named groups: %s)", strings.Join(names, ", "))
			} else {
				msg += " (it has no named group: write (?P<name>...))"
			}
			for k := len(name) - 1; k > 0 && tmpl[i+1] != '{'; k-- {
				if re.SubexpIndex(name[:k]) >= 0 {
					msg += fmt.Sprintf("; write ${%s}%s to end the name earlier", name[:k], name[k:])
					break
				}
			}
			return msg
		}
		refs++
		i += 1 + n
	}
	if refs == 0 {
		return fmt.Sprintf("%q refers to no group of the pattern: use $name or ${name}, such as $ts", tmpl)
	}
	return ""
}

// extractRef parses the group reference at the start of s, right after a $,
// exactly as regexp.Regexp.Expand does. num is the group number, or -1 for a
// name; n is the length of the reference.
func extractRef(s string) (name string, num, n int, ok bool) {
	if s == "" {
		return "", 0, 0, false
	}
	brace := false
	str := s
	if str[0] == '{' {
		brace = true
		str = str[1:]
	}
	i := 0
	for i < len(str) {
		r, size := utf8.DecodeRuneInString(str[i:])
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '_' {
			break
		}
		i += size
	}
	if i == 0 {
		return "", 0, 0, false
	}
	name = str[:i]
	if brace {
		if i >= len(str) || str[i] != '}' {
			return "", 0, 0, false
		}
		i++
	}
	num = 0
	for j := 0; j < len(name); j++ {
		if name[j] < '0' || '9' < name[j] || num >= 1e8 {
			num = -1
			break
		}
		num = num*10 + int(name[j]) - '0'
	}
	if name[0] == '0' && len(name) > 1 {
		num = -1
	}
	n = i
	if brace {
		n++
	}
	return name, num, n, true
}

// candidate is a tag that passed the policy's filters.
type candidate struct {
	tag, value string
	ver        *semver.Version // OrderSemver
	num        number          // OrderNumerical
}

// number is a numerical value: exact for integers.
type number struct {
	isInt bool
	i     int64
	f     float64
}

func parseNumber(s string) (number, bool) {
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return number{isInt: true, i: i, f: float64(i)}, true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return number{}, false
	}
	return number{f: f}, true
}

func (a number) compare(b number) int {
	if a.isInt && b.isInt {
		switch {
		case a.i < b.i:
			return -1
		case a.i > b.i:
			return 1
		}
		return 0
	}
	switch {
	case a.f < b.f:
		return -1
	case a.f > b.f:
		return 1
	}
	return 0
}

// stats count what happened to the tags, to explain a miss.
type stats struct {
	signatures int // signature tags skipped
	considered int // other tags
	filtered   int // tags that pass SemverFilter
	matched    int // tags that pass SemverFilter and Pattern
	parsed     int // of those, values that parse in the order
	preOnly    int // versions out of range only because they are pre-releases
	highest    *candidate
}

// Select picks the newest tag of tags under the policy. When none
// qualifies, the error wraps ErrNoMatch and says how many tags were
// considered and what the policy was.
func (s *Selector) Select(tags []string) (Selection, error) {
	var st stats
	var best candidate
	found := false
	for _, tag := range tags {
		if oci.IsSignatureTag(tag) {
			st.signatures++
			continue
		}
		st.considered++
		if s.semverFilter != nil && !s.semverFilter.MatchString(tag) {
			continue
		}
		st.filtered++
		c := candidate{tag: tag, value: tag}
		if s.pattern != nil {
			m := s.pattern.FindStringSubmatchIndex(tag)
			if m == nil {
				continue
			}
			if s.policy.Extract != "" {
				c.value = string(s.pattern.ExpandString(nil, s.policy.Extract, tag, m))
			}
		}
		st.matched++
		switch s.policy.Order {
		case OrderSemver:
			v, err := semver.NewVersion(c.value)
			if err != nil {
				continue
			}
			st.parsed++
			c.ver = v
			if s.constraint != nil && !s.constraint.Check(v) {
				if v.Prerelease() != "" {
					pre := *s.constraint
					pre.IncludePrerelease = true
					if pre.Check(v) {
						st.preOnly++
					}
				}
				if st.highest == nil || s.compare(c, *st.highest) > 0 {
					h := c
					st.highest = &h
				}
				continue
			}
		case OrderNumerical:
			n, ok := parseNumber(c.value)
			if !ok {
				continue
			}
			st.parsed++
			c.num = n
		default:
			st.parsed++
		}
		if !found || s.newer(c, best) {
			best, found = c, true
		}
	}
	if !found {
		return Selection{}, s.noMatch(st)
	}
	sel := Selection{Tag: best.tag, Value: best.value}
	if best.ver != nil {
		sel.Version = best.ver.String()
	}
	return sel, nil
}

// compare orders the values of a and b.
func (s *Selector) compare(a, b candidate) int {
	switch s.policy.Order {
	case OrderSemver:
		return a.ver.Compare(b.ver)
	case OrderNumerical:
		return a.num.compare(b.num)
	default:
		return strings.Compare(a.value, b.value)
	}
}

// newer reports whether a is newer than b.
func (s *Selector) newer(a, b candidate) bool {
	c := s.compare(a, b)
	if s.policy.Direction == DirectionDesc {
		c = -c
	}
	if c != 0 {
		return c > 0
	}
	return a.tag > b.tag
}

// noMatch explains why no tag was selected.
func (s *Selector) noMatch(st stats) error {
	var why []string
	switch {
	case st.considered == 0 && st.signatures == 0:
		why = append(why, "the list is empty")
	case st.considered == 0:
	case s.semverFilter != nil && st.filtered == 0:
		why = append(why, "none matches semverFilter")
	case s.pattern != nil && st.matched == 0:
	case st.parsed == 0:
		switch s.policy.Order {
		case OrderSemver:
			if s.pattern != nil && s.policy.Extract != "" {
				why = append(why, fmt.Sprintf("%d match the pattern but no extracted value is a semantic version", st.matched))
			} else if s.pattern != nil {
				why = append(why, fmt.Sprintf("%d match the pattern but none is a semantic version", st.matched))
			} else {
				why = append(why, "none is a semantic version")
			}
		case OrderNumerical:
			what := "no extracted value"
			if s.policy.Extract == "" {
				what = "none"
			}
			why = append(why, fmt.Sprintf("%d match the pattern but %s is a number", st.matched, what))
		}
	case st.highest != nil:
		why = append(why, fmt.Sprintf("highest version found: %s in tag %q", st.highest.ver, st.highest.tag))
	}
	if st.preOnly > 0 {
		why = append(why, fmt.Sprintf("%d pre-release(s) in range left out: a range admits pre-releases with a -0 suffix, such as \">=1.0.0-0\"", st.preOnly))
	}
	if st.signatures > 0 {
		why = append(why, fmt.Sprintf("%d signature tag(s) ignored", st.signatures))
	}
	msg := fmt.Sprintf("no tag of %d matches %s", st.considered, s.policy)
	if len(why) > 0 {
		msg += " (" + strings.Join(why, "; ") + ")"
	}
	return &msgError{msg: msg, err: ErrNoMatch}
}

// CompareVersions compares the semantic versions a and b (a leading "v" is
// allowed) and returns -1, 0 or +1 as a is older than, equal to or newer
// than b. Pre-releases are older than their release; build metadata is
// ignored. The agent uses it to refuse a downgrade in semver mode.
func CompareVersions(a, b string) (int, error) {
	va, err := semver.NewVersion(a)
	if err != nil {
		return 0, &msgError{msg: fmt.Sprintf("%v %q: %v", ErrInvalidVersion, a, err), err: ErrInvalidVersion}
	}
	vb, err := semver.NewVersion(b)
	if err != nil {
		return 0, &msgError{msg: fmt.Sprintf("%v %q: %v", ErrInvalidVersion, b, err), err: ErrInvalidVersion}
	}
	return va.Compare(vb), nil
}
