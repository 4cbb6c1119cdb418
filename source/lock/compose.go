package lock

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

// composeFile is a parsed Compose file.
type composeFile struct {
	data     []byte
	doc      *yaml.Node
	services []*service
}

// service is what lock needs of a service of a Compose file.
type service struct {
	name string
	line int // of the service's key
	// image is the scalar holding the image, aliases followed; nil when
	// the service sets none. imageLine is where the service writes it.
	image     *yaml.Node
	imageLine int
	build     int // line of build:, 0 when none
	extends   int // line of extends:, 0 when none
	// extendsFile is the line of extends.file, 0 when none.
	extendsFile int
}

// issue is a problem of a Compose file.
type issue struct {
	line    int
	service string
	err     error
}

// maxDepth bounds the aliases and merge keys followed.
const maxDepth = 16

// parseCompose parses a Compose file and finds its services.
func parseCompose(data []byte) (cf *composeFile, issues []issue) {
	doc, err := decodeYAML(data)
	if err != nil {
		return nil, []issue{{line: yamlErrLine(err), err: err}}
	}
	cf = &composeFile{data: data, doc: doc}
	if doc == nil {
		return cf, nil // empty: nothing to lock
	}
	root := deref(doc.Content[0])
	if root == nil || isNull(root) {
		return cf, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, []issue{{line: root.Line, err: errors.New("a Compose file must be a mapping")}}
	}
	top, issues := fields(root)
	for _, kv := range top {
		switch kv.key.Value {
		case "include":
			issues = append(issues, issue{line: kv.key.Line, err: errors.New("include: is not supported: the images of included files could not be pinned; list the files in compose.files of the app instead")})
		case "services":
			svcs := deref(kv.val)
			if svcs == nil || isNull(svcs) {
				continue
			}
			if svcs.Kind != yaml.MappingNode {
				issues = append(issues, issue{line: svcs.Line, err: errors.New("services: must be a mapping")})
				continue
			}
			entries, is := fields(svcs)
			issues = append(issues, is...)
			for _, e := range entries {
				s, is := parseService(e.key, e.val)
				issues = append(issues, is...)
				if s != nil {
					cf.services = append(cf.services, s)
				}
			}
		}
	}
	return cf, issues
}

// parseService finds the image, build and extends fields of a service.
func parseService(key, val *yaml.Node) (*service, []issue) {
	s := &service{name: key.Value, line: key.Line}
	m := deref(val)
	if m == nil || isNull(m) {
		return s, nil
	}
	if m.Kind != yaml.MappingNode {
		return nil, []issue{{line: m.Line, service: s.name, err: errors.New("a service must be a mapping")}}
	}
	entries, issues := fields(m)
	for i := range issues {
		issues[i].service = s.name
	}
	for _, e := range entries {
		switch e.key.Value {
		case "image":
			v := deref(e.val)
			if v == nil || v.Kind != yaml.ScalarNode || isNull(v) || v.ShortTag() != "!!str" {
				issues = append(issues, issue{line: e.val.Line, service: s.name, err: errors.New("image: must be a string")})
				continue
			}
			s.image, s.imageLine = v, e.val.Line
		case "build":
			s.build = e.key.Line
		case "extends":
			s.extends = e.key.Line
			if ext := deref(e.val); ext != nil && ext.Kind == yaml.MappingNode {
				ef, _ := fields(ext)
				for _, f := range ef {
					if f.key.Value == "file" {
						s.extendsFile = f.key.Line
					}
				}
			}
		}
	}
	return s, issues
}

// kv is a key and its value in a mapping.
type kv struct{ key, val *yaml.Node }

// fields returns the entries of the mapping m with merge keys applied: the
// keys of m itself, then those merged in that m does not set. Duplicate and
// non-string keys are issues.
func fields(m *yaml.Node) ([]kv, []issue) {
	var out []kv
	var issues []issue
	seen := map[string]bool{}
	visited := map[*yaml.Node]bool{}
	var walk func(m *yaml.Node, depth int, direct bool)
	walk = func(m *yaml.Node, depth int, direct bool) {
		// A mapping merged twice brings nothing new the second time.
		if depth > maxDepth || visited[m] {
			return
		}
		visited[m] = true
		var merges []*yaml.Node
		lines := map[string]int{}
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
				merges = append(merges, v)
				continue
			}
			if k.Kind != yaml.ScalarNode {
				if direct {
					issues = append(issues, issue{line: k.Line, err: errors.New("keys must be strings")})
				}
				continue
			}
			if first, dup := lines[k.Value]; dup {
				if direct {
					issues = append(issues, issue{line: k.Line, err: fmt.Errorf("duplicate key %q (first at line %d)", k.Value, first)})
				}
				continue
			}
			lines[k.Value] = k.Line
			if !seen[k.Value] {
				seen[k.Value] = true
				out = append(out, kv{k, v})
			}
		}
		for _, mv := range merges {
			mv = deref(mv)
			if mv == nil {
				continue
			}
			switch mv.Kind {
			case yaml.MappingNode:
				walk(mv, depth+1, false)
			case yaml.SequenceNode:
				for _, item := range mv.Content {
					if item = deref(item); item != nil && item.Kind == yaml.MappingNode {
						walk(item, depth+1, false)
					}
				}
			}
		}
	}
	walk(m, 0, true)
	return out, issues
}

// deref follows aliases; nil if they go too deep.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode; i++ {
		if i > maxDepth {
			return nil
		}
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// decodeYAML decodes data into a single YAML document; nil when data holds
// none.
func decodeYAML(data []byte) (doc *yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			doc, err = nil, fmt.Errorf("invalid YAML: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var d yaml.Node
	if err := dec.Decode(&d); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &lineError{line: extra.Line, err: errors.New("a second YAML document: a Compose file holds one")}
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlError(err)
	}
	if len(d.Content) == 0 {
		return nil, nil
	}
	return &d, nil
}

// lineError is an error at a line.
type lineError struct {
	line int
	err  error
}

func (e *lineError) Error() string { return e.err.Error() }
func (e *lineError) Unwrap() error { return e.err }

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlError turns an error of yaml.v3 into a *lineError.
func yamlError(err error) error {
	msg := err.Error()
	line := 0
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	return &lineError{line: line, err: errors.New("invalid YAML: " + strings.TrimPrefix(msg, "yaml: "))}
}

// yamlErrLine returns the line of an error of decodeYAML, 0 if unknown.
func yamlErrLine(err error) int {
	var le *lineError
	if errors.As(err, &le) {
		return le.line
	}
	return 0
}
