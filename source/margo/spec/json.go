package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// maxJSONDepth bounds the nesting of the JSON documents parsed here.
const maxJSONDepth = 32

// decodeJSON checks that data is exactly one JSON value with no duplicate
// object keys and at most maxJSONDepth levels, and decodes it with numbers
// kept as json.Number.
func decodeJSON(data []byte) (any, error) {
	if err := checkJSON(data); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	return v, nil
}

// checkJSON walks the tokens of data: one value, no duplicate keys, bounded
// depth, nothing after the value.
func checkJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	type frame struct {
		object bool
		keys   map[string]bool
		key    bool // the next token of an object is a key
	}
	var stack []*frame
	values := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("invalid JSON: %v", err)
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.key {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			k, _ := tok.(string)
			if top.keys[k] {
				return fmt.Errorf("invalid JSON: duplicate key %q", k)
			}
			top.keys[k] = true
			top.key = false
			continue
		}
		if top == nil {
			values++
			if values > 1 {
				return errors.New("invalid JSON: more than one value")
			}
		}
		if top != nil && top.object {
			top.key = true
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				if len(stack) >= maxJSONDepth {
					return fmt.Errorf("invalid JSON: nested deeper than %d levels", maxJSONDepth)
				}
				stack = append(stack, &frame{object: d == '{', keys: map[string]bool{}, key: d == '{'})
			case ']':
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1].object {
					stack[len(stack)-1].key = true
				}
			}
			continue
		}
	}
	if values == 0 {
		return errors.New("invalid JSON: empty document")
	}
	return nil
}

// obj is a JSON object being validated, with the problems found.
type obj struct {
	p    *problems
	path string
	m    map[string]any
	seen map[string]bool
}

// object returns v as an obj, or nil after recording that it is not one.
func object(p *problems, path string, v any) *obj {
	m, ok := v.(map[string]any)
	if !ok {
		p.add(path, "must be an object, got %s", describe(v))
		return nil
	}
	return &obj{p: p, path: path, m: m, seen: map[string]bool{}}
}

func join(path, f string) string {
	if path == "" {
		return f
	}
	return path + "." + f
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// get returns the member name; required members that are absent are
// recorded.
func (o *obj) get(name string, required bool) (any, bool) {
	o.seen[name] = true
	v, ok := o.m[name]
	if !ok && required {
		o.p.add(o.path, "missing required field %q", name)
	}
	return v, ok
}

// str returns the string member name.
func (o *obj) str(name string, required bool) (string, bool) {
	v, ok := o.get(name, required)
	if !ok {
		return "", false
	}
	s, isStr := v.(string)
	if !isStr {
		o.p.add(join(o.path, name), "must be a string, got %s", describe(v))
		return "", false
	}
	return s, true
}

// uint64 returns the non-negative integer member name.
func (o *obj) uint64(name string, required bool) (uint64, bool) {
	v, ok := o.get(name, required)
	if !ok {
		return 0, false
	}
	n, isNum := v.(json.Number)
	if !isNum {
		o.p.add(join(o.path, name), "must be an integer, got %s", describe(v))
		return 0, false
	}
	u, err := strconv.ParseUint(n.String(), 10, 64)
	if err != nil {
		o.p.add(join(o.path, name), "must be an integer from 0 to %d, got %s", uint64(math.MaxUint64), n)
		return 0, false
	}
	return u, true
}

// boolean returns the boolean member name.
func (o *obj) boolean(name string) (bool, bool) {
	v, ok := o.get(name, false)
	if !ok {
		return false, false
	}
	b, isBool := v.(bool)
	if !isBool {
		o.p.add(join(o.path, name), "must be true or false, got %s", describe(v))
		return false, false
	}
	return b, true
}

// strict records the members no get asked for, except extension keys.
func (o *obj) strict() {
	for k := range o.m {
		if !o.seen[k] && !IsExtensionKey(k) {
			o.p.add(o.path, "unknown field %q", k)
		}
	}
}

// describe names a decoded JSON value for errors.
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return fmt.Sprintf("the boolean %v", x)
	case json.Number:
		return fmt.Sprintf("the number %s", x)
	case string:
		if len(x) > 64 {
			x = x[:64] + "…"
		}
		return fmt.Sprintf("the string %q", x)
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
