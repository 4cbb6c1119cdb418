package lock

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Files are edited in place, byte for byte, so that comments, quoting,
// indentation and order survive: a scalar is located from the line and
// column yaml.v3 gives and replaced, a field is inserted as a new line.
// Callers check the result by parsing it again and fall back on encoding
// the edited yaml.Node tree when an edit cannot be made exactly.

// edit replaces data[off:end] with text.
type edit struct {
	off, end int
	text     string
}

// applyEdits applies edits that do not overlap.
func applyEdits(data []byte, edits []edit) ([]byte, bool) {
	sort.SliceStable(edits, func(i, j int) bool { return edits[i].off < edits[j].off })
	var out bytes.Buffer
	pos := 0
	for _, e := range edits {
		if e.off < pos || e.end < e.off || e.end > len(data) {
			return nil, false
		}
		out.Write(data[pos:e.off])
		out.WriteString(e.text)
		pos = e.end
	}
	out.Write(data[pos:])
	return out.Bytes(), true
}

// lineStarts returns the offset of each line of data, as yaml.v3 counts
// them. A UTF-8 byte order mark is skipped.
func lineStarts(data []byte) []int {
	start := 0
	if bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) {
		start = 3
	}
	starts := []int{start}
	for i := start; i < len(data); i++ {
		switch data[i] {
		case '\n':
			starts = append(starts, i+1)
		case '\r':
			if i+1 < len(data) && data[i+1] == '\n' {
				i++
			}
			starts = append(starts, i+1)
		}
	}
	return starts
}

// scalarSpan locates the single-line scalar n in data: the span of its
// text, quotes included, and its quote character (0 when plain). ok is
// false when it cannot be located exactly.
func scalarSpan(data []byte, starts []int, n *yaml.Node) (off, end int, quote byte, ok bool) {
	if n.Kind != yaml.ScalarNode || n.Line < 1 || n.Line > len(starts) || n.Column < 1 {
		return 0, 0, 0, false
	}
	if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 || strings.ContainsAny(n.Value, "\r\n") || n.Value == "" {
		return 0, 0, 0, false
	}
	off = starts[n.Line-1]
	for i := 1; i < n.Column; i++ {
		if off >= len(data) || data[off] == '\n' || data[off] == '\r' {
			return 0, 0, 0, false
		}
		_, size := utf8.DecodeRune(data[off:])
		off += size
	}
	// The node starts at its anchor or tag, if it has any.
	for range 2 {
		if off >= len(data) || (data[off] != '&' && data[off] != '!') {
			break
		}
		for off < len(data) && data[off] != ' ' && data[off] != '\t' && data[off] != '\n' && data[off] != '\r' {
			off++
		}
		for off < len(data) && (data[off] == ' ' || data[off] == '\t') {
			off++
		}
	}
	v := n.Value
	switch {
	case n.Style&yaml.DoubleQuotedStyle != 0:
		quote = '"'
	case n.Style&yaml.SingleQuotedStyle != 0:
		quote = '\''
	}
	if quote == 0 {
		if !bytes.HasPrefix(data[off:], []byte(v)) {
			return 0, 0, 0, false
		}
		return off, off + len(v), 0, true
	}
	if strings.ContainsAny(v, `\"'`) || off+len(v)+2 > len(data) || data[off] != quote ||
		!bytes.HasPrefix(data[off+1:], []byte(v)) || data[off+1+len(v)] != quote {
		return 0, 0, 0, false
	}
	return off, off + len(v) + 2, quote, true
}

// replaceScalars returns data with the text of each scalar of values
// replaced by its new value, in the same style.
func replaceScalars(data []byte, values map[*yaml.Node]string) ([]byte, bool) {
	starts := lineStarts(data)
	var edits []edit
	for n, v := range values {
		off, end, quote, ok := scalarSpan(data, starts, n)
		if !ok {
			return nil, false
		}
		text := v
		if quote != 0 {
			text = string(quote) + v + string(quote)
		}
		edits = append(edits, edit{off, end, text})
	}
	return applyEdits(data, edits)
}

// insertAfter returns the edit that adds key: value to the mapping m, right
// after the single-line scalar after (a value of m).
func insertAfter(data []byte, starts []int, m, after *yaml.Node, key, value string) (edit, bool) {
	_, end, _, ok := scalarSpan(data, starts, after)
	if !ok {
		return edit{}, false
	}
	if m.Style&yaml.FlowStyle != 0 {
		return edit{end, end, ", " + key + ": " + value}, true
	}
	// A block mapping: a new line indented like the key of after.
	for i := 1; i < len(m.Content); i += 2 {
		if m.Content[i] == after {
			k := m.Content[i-1]
			if k.Line != after.Line || k.Column < 1 {
				return edit{}, false
			}
			start := starts[k.Line-1]
			if start+k.Column-1 > len(data) {
				return edit{}, false
			}
			indent := string(data[start : start+k.Column-1])
			if strings.Trim(indent, " ") != "" {
				return edit{}, false
			}
			eol := end
			for eol < len(data) && data[eol] != '\n' && data[eol] != '\r' {
				eol++
			}
			if eol == len(data) {
				return edit{eol, eol, "\n" + indent + key + ": " + value + "\n"}, true
			}
			nl := "\n"
			if data[eol] == '\r' {
				nl = "\r"
				if eol+1 < len(data) && data[eol+1] == '\n' {
					nl = "\r\n"
				}
			}
			at := eol + len(nl)
			return edit{at, at, indent + key + ": " + value + nl}, true
		}
	}
	return edit{}, false
}

// encodeYAML encodes a document the way yaml.v3 does, indented by two.
func encodeYAML(doc *yaml.Node) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("encode YAML: %v", r)
		}
	}()
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
