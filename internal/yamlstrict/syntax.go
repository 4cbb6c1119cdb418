// syntax.go locates yaml.v3's syntax and type errors at the line that caused them.

package yamlstrict

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

var (
	yamlLine      = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	unknownAnchor = regexp.MustCompile(`^yaml: unknown anchor '(.*)' referenced$`)
)

// yamlError records an error of yaml.v3, located at its line when it has one.
func (p *Parser) yamlError(data []byte, err error) {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	for _, m := range msgs {
		line := 0
		if sm := yamlLine.FindStringSubmatch(m); sm != nil {
			line, _ = strconv.Atoi(sm[1])
			m = sm[2]
		}
		if sm := unknownAnchor.FindStringSubmatch(m); sm != nil && line == 0 {
			if i := bytes.Index(data, []byte("*"+sm[1])); i >= 0 {
				line = 1 + bytes.Count(data[:i], []byte("\n"))
			}
		}
		m = strings.TrimPrefix(m, "yaml: ")
		e := &Error{File: p.File, Line: line, Msg: "invalid YAML: " + m}
		if te == nil && line > 0 {
			// yaml.v3 names the line where the enclosing block starts
			// (its context mark), not the offending one: find that.
			e.Line = syntaxLine(data, m, line)
			e.Source = sourceLine(data, e.Line)
		}
		p.errs = append(p.errs, e)
	}
}

// maxLocate is the largest document whose syntax errors syntaxLine
// locates; larger ones keep yaml.v3's line.
const maxLocate = 1 << 20

// syntaxLine returns the line of data that makes it fail to parse with
// the message msg: the shortest prefix of whole lines that fails with the
// same message ends at it. yaml.v3 reports the line its context mark is
// on (where the enclosing block mapping or sequence starts), which is
// often far above the mis-indented line; the problem is where a growing
// prefix first stops parsing. A prefix that fails only because it cuts a
// multi-line construct fails with another message and is passed over.
// Without such a prefix, reported is returned.
func syntaxLine(data []byte, msg string, reported int) int {
	if len(data) > maxLocate {
		return reported
	}
	ends := lineEnds(data)
	fails := func(n int) bool { // the first n lines fail with msg
		err := parseOnly(data[:ends[n-1]])
		return err != nil && strings.HasSuffix(err.Error(), msg)
	}
	if !fails(len(ends)) {
		return reported
	}
	// Binary search for the shortest failing prefix, from the reported
	// line on: nothing above it can be the problem.
	lo, hi := max(reported, 1), len(ends)
	if lo > hi {
		return reported
	}
	for lo < hi {
		mid := (lo + hi) / 2
		if fails(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// lineEnds returns the offset just past each line of data.
func lineEnds(data []byte) []int {
	var ends []int
	for i, c := range data {
		if c == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		ends = append(ends, len(data))
	}
	return ends
}

// parseOnly parses every document of data into nodes, and returns the
// first error.
func parseOnly(data []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// sourceLine returns line n (1-based) of data, at most 160 bytes of it.
func sourceLine(data []byte, n int) string {
	lines := bytes.Split(data, []byte("\n"))
	if n < 1 || n > len(lines) {
		return ""
	}
	l := strings.TrimRight(string(lines[n-1]), "\r")
	if len(l) > 160 {
		l = l[:160] + "…"
	}
	return l
}
