package yamlstrict

import (
	"errors"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// parse runs fn on the root mapping of doc and returns the problems.
func parse(t *testing.T, doc string, fn func(p *Parser, f map[string]Field)) string {
	t.Helper()
	p := &Parser{File: "f.yaml"}
	root := p.Document([]byte(doc), "it needs x", "f.yaml")
	if root != nil {
		if f := p.Mapping(root, "", "s", "i", "x", "b", "d", "l", "m"); f != nil {
			fn(p, f)
		}
	}
	if err := p.Err(); err != nil {
		return err.Error()
	}
	return ""
}

func TestHelpers(t *testing.T) {
	tests := []struct {
		doc  string
		fn   func(p *Parser, f map[string]Field)
		want string
	}{
		{doc: "", want: "f.yaml: empty file: it needs x"},
		{doc: "s: 1\n---\ns: 2\n", want: "f.yaml:2: a second YAML document: f.yaml holds exactly one"},
		{doc: "s: [\n", want: "f.yaml:1: invalid YAML: did not find expected node content (line 1 reads \"s: [\")"},
		{doc: "zzzz: 1\nmm: 2\n", want: "f.yaml:1: unknown field \"zzzz\"\nf.yaml:2: unknown field \"mm\" (did you mean \"m\"?)"},
		{
			doc: "i: 5\nx: 0.5\nd: 90s\nb: true\ns: 12\nl: [a, b]\n",
			fn: func(p *Parser, f map[string]Field) {
				i, ok1 := p.Int(f["i"].Val, "i")
				x, ok2 := p.Float(f["x"].Val, "x")
				d, ok3 := p.Duration(f["d"].Val, "d", time.Second)
				b, ok4 := p.Bool(f["b"].Val, "b")
				s, ok5 := p.Str(f["s"].Val, "s")
				l := p.Strings(f["l"].Val, "l", nil)
				if i != 5 || x != 0.5 || d != 90*time.Second || !b || s != "12" || len(l) != 2 || !(ok1 && ok2 && ok3 && ok4 && ok5) {
					t.Errorf("values %v %v %v %v %q %q", i, x, d, b, s, l)
				}
				if p.Failed() || p.Len() != 0 {
					t.Error("problems recorded")
				}
			},
		},
		{
			doc: "i: 1.5\nx: .inf\nd: 10\nb: 'true'\ns: [1]\nl: [a, a]\n",
			fn: func(p *Parser, f map[string]Field) {
				p.Int(f["i"].Val, "i")
				p.Float(f["x"].Val, "x")
				p.Duration(f["d"].Val, "d", time.Second)
				p.Bool(f["b"].Val, "b")
				p.Str(f["s"].Val, "s")
				p.Strings(f["l"].Val, "l", nil)
			},
			want: `f.yaml:1: i: must be an integer, got the number 1.5
f.yaml:2: x: must be a number, got the number .inf
f.yaml:3: d: must be a duration such as 1m or 30s, got the number 10 (add a unit: s, m or h)
f.yaml:4: b: must be true or false, got the string "true"
f.yaml:5: s: must be a string, got a list
f.yaml:6: l[1]: "a" is listed twice (first at line 6)`,
		},
		{
			doc: "m: &a {s: 1}\nd: *a\nx: {<<: *a, i: 2}\n",
			fn: func(p *Parser, f map[string]Field) {
				p.Duration(f["d"].Val, "d", 0)
				n := f["x"].Val
				p.Mapping(n, "x", "i", "s")
				p.Missing(n, n, "x", "s", "")
				if !p.Typo(n, "anything") {
					t.Error("a mapping with a merge key does not excuse missing fields")
				}
			},
			want: "f.yaml:2: d: YAML aliases are not supported here: write the value out\nf.yaml:3: x: merge keys (<<) are not supported here: write the fields out",
		},
		{
			doc: "m: {k: [1, 2]}\n",
			fn: func(p *Parser, f map[string]Field) {
				var v map[string]string
				p.Decode(f["m"].Val, "m", &v)
			},
			want: "f.yaml:1: m: cannot unmarshal !!seq into string",
		},
	}
	for _, tt := range tests {
		fn := tt.fn
		if fn == nil {
			fn = func(*Parser, map[string]Field) {}
		}
		if got := parse(t, tt.doc, fn); got != tt.want {
			t.Errorf("%q:\n got %s\nwant %s", tt.doc, got, tt.want)
		}
	}
}

func TestError(t *testing.T) {
	for _, tt := range []struct {
		e    Error
		want string
	}{
		{Error{File: "a.yaml", Line: 3, Field: "x.y", Msg: "bad"}, "a.yaml:3: x.y: bad"},
		{Error{File: "a.yaml", Msg: "empty"}, "a.yaml: empty"},
	} {
		var err error = &tt.e
		var target *Error
		if err.Error() != tt.want || !errors.As(err, &target) {
			t.Errorf("%#v: %s", tt.e, err)
		}
	}
	if Join("", "a") != "a" || Join("a", "b") != "a.b" || Index("a", 2) != "a[2]" {
		t.Error("paths")
	}
	if Suggest("intervall", []string{"interval", "timeout"}) != "interval" || Suggest("zzz", []string{"interval"}) != "" {
		t.Error("Suggest")
	}
	for _, tt := range []struct {
		n    yaml.Node
		want string
	}{
		{yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}, "null"},
		{yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: "3"}, "the number 3"},
		{yaml.Node{Kind: yaml.ScalarNode, Tag: "!x"}, "a value tagged !x"},
		// Found by FuzzParse of source/replicate: the tag !%0A is "!\n";
		// it must not start a line of the error message.
		{yaml.Node{Kind: yaml.ScalarNode, Tag: "!\n"}, `a value tagged "!\n"`},
		{yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "true\r"}, `the boolean "true\r"`},
	} {
		if got := Describe(&tt.n); got != tt.want {
			t.Errorf("Describe(%+v) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

// TestSyntaxErrorLine: a YAML syntax error is reported at the offending
// line, shown under the message, not at the line where the enclosing block
// starts, which yaml.v3 gives (issue 14, point 6: ":2" for a mis-indented
// line 7).
func TestSyntaxErrorLine(t *testing.T) {
	tests := []struct {
		name, doc string
		line      int
		source    string
	}{
		{"mis-indented key", "sources:\n  - name: line-3\n    url: oci://r/x\n    interval: 1m\n    verify:\n      keys: [/k]\n   ref: {tag: v1}\n", 7, "   ref: {tag: v1}"},
		{"value with a colon", "sources:\n  - name: line-3\n    url: oci://r/x\n    verify:\n      keys: [/k]\n      ref: x: y\n", 6, "      ref: x: y"},
		{"dedented into nothing", "a: 1\nb:\n  c: 1\n d: 2\n", 4, " d: 2"},
		{"helm field out of place", "apps:\n  - name: web\n    compose: {path: apps/web}\n  - name: x\n    helm:\n      chart: c\n     version: 1\n", 7, "     version: 1"},
		{"tab", "a: 1\n\tb: 2\n", 2, "\tb: 2"},
		{"unclosed flow sequence", "a: 1\nb: 2\nc: [1, 2\nd: 4\n", 3, "c: [1, 2"},
		{"a later error after a multi-line flow mapping", "a: {x: 1,\n  y: 2}\nb:\n  c: 1\n d: 2\n", 5, " d: 2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &Parser{File: "f.yaml"}
			if p.Document([]byte(tc.doc), "x", "f.yaml") != nil {
				t.Fatal("parsed")
			}
			var e *Error
			if !errors.As(p.Err(), &e) {
				t.Fatalf("error %v is no *Error", p.Err())
			}
			if e.Line != tc.line || e.Source != tc.source {
				t.Errorf("line %d %q, want %d %q (%v)", e.Line, e.Source, tc.line, tc.source, e)
			}
		})
	}
}
