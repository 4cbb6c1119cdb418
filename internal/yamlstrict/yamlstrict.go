// Package yamlstrict holds the pieces shared by berth's strict YAML
// parsers (berth.yaml, the agent's configuration): a document is decoded
// into yaml.v3 nodes and walked by hand, so that unknown fields, duplicate
// keys, values of the wrong type and invalid values are all reported, each
// located at a line of the file and named by its field path, and all of
// them at once.
//
// YAML aliases and merge keys are refused by the helpers here: a
// configuration is read by people, write the values out.
package yamlstrict

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"
)

// Error is one problem of a file.
type Error struct {
	// File is the name given to the parser.
	File string
	// Line is the 1-based line of the offending node; 0 when the problem
	// concerns the whole file.
	Line int
	// Field is the path of the offending field, such as apps[1].helm.chart;
	// empty for the document itself.
	Field string
	// Msg says what is wrong.
	Msg string
	// Source is the text of line Line, quoted after the message; set for
	// YAML syntax errors, where the line is all there is to go by.
	Source string
}

// Error returns "file:line: field: msg", and the offending line when
// Source is set: `(line 7 reads "   ref: x")`.
func (e *Error) Error() string {
	s := e.File
	if e.Line > 0 {
		s += fmt.Sprintf(":%d", e.Line)
	}
	if e.Field != "" {
		s += ": " + e.Field
	}
	s += ": " + e.Msg
	if e.Source != "" {
		s += fmt.Sprintf(" (line %d reads %q)", e.Line, e.Source)
	}
	return s
}

// Parser records the problems of one file. The zero value with File set is
// ready to use.
type Parser struct {
	// File is the name of the file, used in errors.
	File string
	// Elsewhere says where fields belong that are known in another
	// mapping of the file, by key: a key unknown where it stands (and no
	// typo of a known one) gets this hint, such as "did you mean
	// verify.keys?" or "apply is a top-level key".
	Elsewhere map[string]string

	errs []*Error
	// typos are, per mapping, the known fields that an unknown field
	// looks like a typo of: they are not reported missing as well.
	typos map[*yaml.Node]map[string]bool
	// merged are the mappings with a merge key, refused: any field may
	// have been meant to come from it.
	merged map[*yaml.Node]bool
}

// Field is a key and its value in a mapping.
type Field struct {
	// Key is the key node.
	Key *yaml.Node
	// Val is the value node.
	Val *yaml.Node
}

// Join returns the path of field f of the node at path.
func Join(path, f string) string {
	if path == "" {
		return f
	}
	return path + "." + f
}

// Index returns the path of item i of the list at path.
func Index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// Errorf records a problem of the node n (nil: the whole file) at field.
func (p *Parser) Errorf(n *yaml.Node, field, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.errs = append(p.errs, &Error{File: p.File, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// Failed reports whether a problem was recorded.
func (p *Parser) Failed() bool { return len(p.errs) > 0 }

// Len returns the number of problems recorded so far; compare two
// readings to know whether a part of the file had problems.
func (p *Parser) Len() int { return len(p.errs) }

// Err joins the problems recorded, ordered by line, each an *Error; nil if
// there is none.
func (p *Parser) Err() error {
	sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
	errs := make([]error, len(p.errs))
	for i, e := range p.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// Document decodes data into a single YAML document and returns its root,
// or nil after recording why it cannot. needs completes the message of an
// empty file, such as "a desired state needs apps"; what names the file in
// the message about a second document: "<what> holds exactly one".
func (p *Parser) Document(data []byte, needs, what string) (root *yaml.Node) {
	defer func() {
		// yaml.v3 reports its errors by panicking internally and recovers
		// them itself; anything else it lets through is a bug of its own
		// that must not take the caller down.
		if r := recover(); r != nil {
			p.Errorf(nil, "", "invalid YAML: %v", r)
			root = nil
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.Errorf(nil, "", "empty file: %s", needs)
		} else {
			p.yamlError(data, err)
		}
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.Errorf(&extra, "", "a second YAML document: %s holds exactly one", what)
		return nil
	} else if !errors.Is(err, io.EOF) {
		p.yamlError(data, err)
		return nil
	}
	if len(doc.Content) == 0 || doc.Content[0].ShortTag() == "!!null" {
		p.Errorf(&doc, "", "empty document: %s", needs)
		return nil
	}
	return doc.Content[0]
}

// Decode decodes n into v, as yaml.v3 does, and records the problems it
// meets at path. It reports whether it succeeded.
func (p *Parser) Decode(n *yaml.Node, path string, v any) bool {
	err := decodeNode(n, v)
	if err == nil {
		return true
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		for _, msg := range te.Errors {
			line := n.Line
			if sm := yamlLine.FindStringSubmatch(msg); sm != nil {
				line, _ = strconv.Atoi(sm[1])
				msg = sm[2]
			}
			p.errs = append(p.errs, &Error{File: p.File, Line: line, Field: path, Msg: msg})
		}
	} else {
		p.Errorf(n, path, "%v", err)
	}
	return false
}

// decodeNode decodes n, turning a panic of yaml.v3 into an error.
func decodeNode(n *yaml.Node, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("invalid YAML: %v", r)
		}
	}()
	return n.Decode(v)
}

// Missing reports, at the node at, that the mapping n lacks field name,
// unless an unknown field of n was already reported as a likely typo of it.
// why completes the message.
func (p *Parser) Missing(n, at *yaml.Node, path, name, why string) {
	if p.Typo(n, name) {
		return
	}
	p.Errorf(at, path, "missing required field %q%s", name, why)
}

// Typo reports whether an unknown field of the mapping n was reported as a
// likely typo of the known field name, or n has a (refused) merge key that
// may have been meant to bring it: the absence of name is then not worth
// reporting as well.
func (p *Parser) Typo(n *yaml.Node, name string) bool { return p.typos[n][name] || p.merged[n] }

// Mapping checks that n is a mapping whose keys are among known, and
// returns its fields by key. Unknown fields are reported, with the known
// field they look like a typo of. It returns nil when n is not a mapping.
func (p *Parser) Mapping(n *yaml.Node, path string, known ...string) map[string]Field {
	if !p.Kind(n, path, yaml.MappingNode) {
		return nil
	}
	out := map[string]Field{}
	p.Keys(n, path, func(k, v *yaml.Node) {
		if !slices.Contains(known, k.Value) {
			msg := fmt.Sprintf("unknown field %q", k.Value)
			if s := Suggest(k.Value, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
				if p.typos == nil {
					p.typos = map[*yaml.Node]map[string]bool{}
				}
				if p.typos[n] == nil {
					p.typos[n] = map[string]bool{}
				}
				p.typos[n][s] = true
			} else if hint := p.Elsewhere[k.Value]; hint != "" {
				msg += " here (" + hint + ")"
			}
			p.Errorf(k, path, "%s", msg)
			return
		}
		out[k.Value] = Field{k, v}
	})
	return out
}

// Keys calls fn for each key and value of the mapping n whose key is a
// plain string, appearing for the first time, and not a merge key; the
// others are reported.
func (p *Parser) Keys(n *yaml.Node, path string, fn func(k, v *yaml.Node)) {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge":
			p.Errorf(k, path, "merge keys (<<) are not supported here: write the fields out")
			if p.merged == nil {
				p.merged = map[*yaml.Node]bool{}
			}
			p.merged[n] = true
			continue
		case k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str":
			p.Errorf(k, path, "keys must be strings, got %s", Describe(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p.Errorf(k, path, "duplicate field %q (first at line %d)", k.Value, first)
			continue
		}
		seen[k.Value] = k.Line
		fn(k, v)
	}
}

// Kind checks that n is of kind k, and reports it if not.
func (p *Parser) Kind(n *yaml.Node, path string, k yaml.Kind) bool {
	if n.Kind == yaml.AliasNode {
		p.Errorf(n, path, "YAML aliases are not supported here: write the value out")
		return false
	}
	if n.Kind != k {
		p.Errorf(n, path, "must be %s, got %s", kindName(k), Describe(n))
		return false
	}
	return true
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return "a scalar"
	}
}

// Describe names what n is, for errors: "a mapping", "the string "x"",
// "the number 5", "null"...
func Describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	switch n.ShortTag() {
	case "!!null":
		return "null"
	case "!!bool":
		return "the boolean " + printable(n.Value)
	case "!!int", "!!float":
		return "the number " + printable(n.Value)
	case "!!str":
		return fmt.Sprintf("the string %q", n.Value)
	}
	return "a value tagged " + printable(n.ShortTag())
}

// printable returns s as it is when it is one line of printable text, else
// quoted: a tag or value of an untrusted file must not start a line of an
// error message of its own (a tag !%0A is "!\n").
func printable(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// IsNull reports whether n is an explicit or empty null.
func IsNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// Str returns the text of the scalar n. Numbers and dates are taken as
// written; booleans and null are refused.
func (p *Parser) Str(n *yaml.Node, path string) (string, bool) {
	if n.Kind == yaml.AliasNode {
		p.Kind(n, path, yaml.ScalarNode)
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		p.Errorf(n, path, "must be a string, got %s", Describe(n))
		return "", false
	}
	switch n.ShortTag() {
	case "!!str", "!!int", "!!float", "!!timestamp":
		return n.Value, true
	case "!!bool", "!!null":
		p.Errorf(n, path, "must be a string, got %s (quote it if you mean the string)", Describe(n))
	default:
		p.Errorf(n, path, "must be a string, got %s", Describe(n))
	}
	return "", false
}

// Bool returns the value of the boolean scalar n.
func (p *Parser) Bool(n *yaml.Node, path string) (bool, bool) {
	if !p.Kind(n, path, yaml.ScalarNode) {
		return false, false
	}
	if n.ShortTag() != "!!bool" {
		p.Errorf(n, path, "must be true or false, got %s", Describe(n))
		return false, false
	}
	var b bool
	if err := decodeNode(n, &b); err != nil {
		p.Errorf(n, path, "must be true or false, got %s", Describe(n))
		return false, false
	}
	return b, true
}

// Int returns the value of the integer scalar n.
func (p *Parser) Int(n *yaml.Node, path string) (int64, bool) {
	if n.Kind == yaml.AliasNode {
		return 0, p.Kind(n, path, yaml.ScalarNode)
	}
	var i int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || decodeNode(n, &i) != nil {
		p.Errorf(n, path, "must be an integer, got %s", Describe(n))
		return 0, false
	}
	return i, true
}

// Float returns the value of the number scalar n, integer or not; infinity
// and NaN are refused.
func (p *Parser) Float(n *yaml.Node, path string) (float64, bool) {
	if n.Kind == yaml.AliasNode {
		return 0, p.Kind(n, path, yaml.ScalarNode)
	}
	var f float64
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") || decodeNode(n, &f) != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		p.Errorf(n, path, "must be a number, got %s", Describe(n))
		return 0, false
	}
	return f, true
}

// Duration returns the value of the scalar n, a Go duration such as 1m30s.
// It must be at least minimum.
func (p *Parser) Duration(n *yaml.Node, path string, minimum time.Duration) (time.Duration, bool) {
	if n.Kind == yaml.AliasNode {
		return 0, p.Kind(n, path, yaml.ScalarNode)
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		hint := ""
		if t := n.ShortTag(); t == "!!int" || t == "!!float" {
			hint = " (add a unit: s, m or h)"
		}
		p.Errorf(n, path, "must be a duration such as 1m or 30s, got %s%s", Describe(n), hint)
		return 0, false
	}
	d, err := time.ParseDuration(n.Value)
	if err != nil {
		p.Errorf(n, path, "must be a duration such as 1m or 30s, got %q", n.Value)
		return 0, false
	}
	if d < minimum {
		p.Errorf(n, path, "must be at least %v, got %q", minimum, n.Value)
		return 0, false
	}
	return d, true
}

// Strings returns the strings of the list n; null is an empty list. A
// string listed twice is reported. check, when not nil, is called on each
// string.
func (p *Parser) Strings(n *yaml.Node, path string, check func(n *yaml.Node, path, s string)) []string {
	if IsNull(n) || !p.Kind(n, path, yaml.SequenceNode) {
		return nil
	}
	var out []string
	seen := map[string]int{}
	for i, item := range n.Content {
		ip := Index(path, i)
		s, ok := p.Str(item, ip)
		if !ok {
			continue
		}
		if first, dup := seen[s]; dup {
			p.Errorf(item, ip, "%q is listed twice (first at line %d)", s, first)
			continue
		}
		seen[s] = item.Line
		if check != nil {
			check(item, ip, s)
		}
		out = append(out, s)
	}
	return out
}

// Suggest returns the known field closest to s, if it is close enough to
// be a typo.
func Suggest(s string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := distance(strings.ToLower(s), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// distance is the Levenshtein distance of a and b, capped for long inputs.
func distance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
