package spec

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/internal/yamlstrict"
)

// DeviceConstraints are the deviceConstraints of a deployment profile,
// copied by the WFM from the application description.
//
// Evaluation (NOTES §2.5): capacity first, then the rules. The rules OR: a
// device is eligible when one rule matches (or there is none). A rule
// with both selectors needs both; the expressions of a selector AND.
type DeviceConstraints struct {
	// Capacity is nil when the profile states none.
	Capacity *Capacity
	// Rules are the eligibility rules.
	Rules []Rule
}

// Capacity is what a profile needs of the device.
type Capacity struct {
	// CPUCores is the number of cores needed (0: not stated).
	CPUCores float64
	// Architectures accepted (empty: any). amd64, arm64, arm, riscv64 or
	// other.
	Architectures []string
	// Memory and Storage needed, in bytes (0: not stated).
	Memory, Storage int64
}

// Rule is one eligibility rule.
type Rule struct {
	// Property selects on the capabilities' properties, by JSON Pointer.
	Property *Selector
	// Label selects on the device's labels, by exact name.
	Label *Selector
}

// Selector is a list of expressions, all of which must hold.
type Selector struct {
	Expressions []Expression
}

// Expression is one matchExpressions entry.
type Expression struct {
	// Key is an RFC 6901 JSON Pointer (property selectors and item
	// selectors) or a label name.
	Key string
	// Operator is In, NotIn, Exists, DoesNotExist, Gt, Lt, ContainsAll or
	// ContainsAny (ContainersAny, a typo of the spec, is read as
	// ContainsAny).
	Operator string
	// Values are compared as strings (numbers as written).
	Values []string
	// Item applies to each element of the array at Key (ContainsAll and
	// ContainsAny).
	Item *Selector
}

var (
	memoryRE  = regexp.MustCompile(`^([0-9]+)(Ki|Mi|Gi)$`)
	storageRE = regexp.MustCompile(`^([0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei)$`)
	archs     = []string{"amd64", "arm64", "arm", "riscv64", "other"}
	operators = []string{"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt", "ContainsAll", "ContainsAny"}
)

// ParseQuantity parses a memory or storage quantity such as 512Mi into
// bytes. storage allows Ti, Pi and Ei besides Ki, Mi and Gi.
func ParseQuantity(s string, storage bool) (int64, error) {
	re := memoryRE
	if storage {
		re = storageRE
	}
	m := re.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a quantity such as 512Mi", truncate(s))
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is too large", truncate(s))
	}
	shift := map[string]uint{"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}[m[2]]
	if n > (1<<63-1)>>shift {
		return 0, fmt.Errorf("%q is too large", truncate(s))
	}
	return n << shift, nil
}

func (p *dparser) constraints(n *yaml.Node, path string) *DeviceConstraints {
	f := p.mapping(n, path, false, "capacityRequirements", "eligibilityRules")
	if f == nil {
		return nil
	}
	dc := &DeviceConstraints{}
	if cf, ok := f["capacityRequirements"]; ok && !yamlstrict.IsNull(cf.Val) {
		dc.Capacity = p.capacity(cf.Val, join(path, "capacityRequirements"))
	}
	for i, rn := range p.ListField(f, path, "eligibilityRules") {
		rpath := index(join(path, "eligibilityRules"), i)
		rf := p.mapping(rn, rpath, false, "propertySelector", "labelSelector")
		if rf == nil {
			continue
		}
		r := Rule{}
		if sf, ok := rf["propertySelector"]; ok {
			r.Property = p.selector(sf.Val, join(rpath, "propertySelector"), true, 0)
		}
		if sf, ok := rf["labelSelector"]; ok {
			r.Label = p.selector(sf.Val, join(rpath, "labelSelector"), false, 0)
		}
		if r.Property == nil && r.Label == nil {
			p.Errorf(rn, rpath, "needs propertySelector, labelSelector or both")
		}
		dc.Rules = append(dc.Rules, r)
	}
	return dc
}

func (p *dparser) capacity(n *yaml.Node, path string) *Capacity {
	f := p.mapping(n, path, false, "cpu", "memory", "storage", "peripherals", "interfaces")
	if f == nil {
		return nil
	}
	c := &Capacity{}
	if cf, ok := f["cpu"]; ok && !yamlstrict.IsNull(cf.Val) {
		cpath := join(path, "cpu")
		if ff := p.mapping(cf.Val, cpath, false, "cores", "architectures"); ff != nil {
			if v, ok := ff["cores"]; ok {
				if x, ok := p.Float(v.Val, join(cpath, "cores")); ok {
					if x < 0 {
						p.Errorf(v.Val, join(cpath, "cores"), "must not be negative")
					}
					c.CPUCores = x
				}
			}
			if v, ok := ff["architectures"]; ok {
				c.Architectures = p.Strings(v.Val, join(cpath, "architectures"), func(n *yaml.Node, path, s string) {
					if !slices.Contains(archs, s) {
						p.Errorf(n, path, "must be one of %s, got %q", strings.Join(archs, ", "), truncate(s))
					}
				})
			}
		}
	}
	for _, q := range []struct {
		name    string
		storage bool
		dst     *int64
	}{{"memory", false, &c.Memory}, {"storage", true, &c.Storage}} {
		if vn, s, ok := p.str(n, f, path, q.name, false); ok {
			b, err := ParseQuantity(s, q.storage)
			if err != nil {
				p.Errorf(vn, join(path, q.name), "%v", err)
			}
			*q.dst = b
		}
	}
	return c
}

func (p *dparser) selector(n *yaml.Node, path string, pointers bool, depth int) *Selector {
	if depth > 4 {
		p.Errorf(n, path, "item selectors nested too deep")
		return nil
	}
	f := p.mapping(n, path, false, "matchExpressions")
	if f == nil {
		return nil
	}
	s := &Selector{}
	for i, en := range p.ListField(f, path, "matchExpressions") {
		epath := index(join(path, "matchExpressions"), i)
		ef := p.mapping(en, epath, false, "key", "operator", "values", "itemSelector")
		if ef == nil {
			continue
		}
		e := Expression{}
		if kn, k, ok := p.str(en, ef, epath, "key", true); ok {
			if pointers && k != "" && !strings.HasPrefix(k, "/") {
				p.Errorf(kn, join(epath, "key"), "must be a JSON Pointer such as /vendor, got %q", truncate(k))
			}
			e.Key = k
		}
		if on, op, ok := p.str(en, ef, epath, "operator", true); ok {
			if op == "ContainersAny" {
				op = "ContainsAny"
			}
			if !slices.Contains(operators, op) {
				p.Errorf(on, join(epath, "operator"), "must be one of %s, got %q", strings.Join(operators, ", "), truncate(op))
			}
			e.Operator = op
		}
		if vf, ok := ef["values"]; ok {
			e.Values = p.Strings(vf.Val, join(epath, "values"), nil)
		}
		if sf, ok := ef["itemSelector"]; ok {
			e.Item = p.selector(sf.Val, join(epath, "itemSelector"), true, depth+1)
		}
		p.checkExpression(en, epath, e, pointers)
		s.Expressions = append(s.Expressions, e)
	}
	return s
}

// checkExpression checks the operands an operator needs.
func (p *dparser) checkExpression(n *yaml.Node, path string, e Expression, pointers bool) {
	switch e.Operator {
	case "In", "NotIn":
		if len(e.Values) == 0 {
			p.Errorf(n, path, "%s needs values", e.Operator)
		}
	case "Exists", "DoesNotExist":
		if len(e.Values) > 0 {
			p.Errorf(n, path, "%s takes no values", e.Operator)
		}
	case "Gt", "Lt":
		if len(e.Values) != 1 {
			p.Errorf(n, path, "%s needs exactly one value", e.Operator)
		} else if _, err := strconv.ParseFloat(e.Values[0], 64); err != nil {
			p.Errorf(n, path, "%s needs a number, got %q", e.Operator, truncate(e.Values[0]))
		}
	case "ContainsAll", "ContainsAny":
		if !pointers {
			p.Errorf(n, path, "%s applies to property selectors only", e.Operator)
		} else if e.Item == nil {
			p.Errorf(n, path, "%s needs an itemSelector", e.Operator)
		}
	}
}

// Eligible evaluates the constraints against the capabilities caps. It
// returns nil when the device is eligible, else an error wrapping
// ErrNotEligible that says what does not match.
func (dc *DeviceConstraints) Eligible(caps *Capabilities) error {
	if dc == nil {
		return nil
	}
	if err := dc.Capacity.check(caps.Properties); err != nil {
		return fmt.Errorf("%w: %v", ErrNotEligible, err)
	}
	if len(dc.Rules) == 0 {
		return nil
	}
	props, err := propertiesDoc(caps.Properties)
	if err != nil {
		return err
	}
	var why []string
	for i, r := range dc.Rules {
		if r.Property != nil {
			if ok, reason := r.Property.matches(props); !ok {
				why = append(why, fmt.Sprintf("rule %d: %s", i+1, reason))
				continue
			}
		}
		if r.Label != nil {
			if ok, reason := r.Label.matchLabels(caps.Labels); !ok {
				why = append(why, fmt.Sprintf("rule %d: %s", i+1, reason))
				continue
			}
		}
		return nil
	}
	return fmt.Errorf("%w: no eligibility rule matches (%s)", ErrNotEligible, strings.Join(why, "; "))
}

// propertiesDoc is the capabilities' properties as the JSON document the
// pointers address.
func propertiesDoc(p CapabilityProperties) (any, error) {
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	var v any
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

func (c *Capacity) check(p CapabilityProperties) error {
	if c == nil {
		return nil
	}
	if c.CPUCores > 0 {
		cores := 0
		for _, cpu := range p.CPUs {
			cores += cpu.Cores
		}
		if float64(cores) < c.CPUCores {
			return fmt.Errorf("needs %v CPU cores, the device reports %d", c.CPUCores, cores)
		}
	}
	if len(c.Architectures) > 0 {
		ok := false
		for _, cpu := range p.CPUs {
			ok = ok || slices.Contains(c.Architectures, cpu.Architecture)
		}
		if !ok {
			return fmt.Errorf("needs a CPU architecture among %s, the device has %s", strings.Join(c.Architectures, ", "), deviceArchs(p))
		}
	}
	for _, q := range []struct {
		what    string
		need    int64
		have    string
		storage bool
	}{{"memory", c.Memory, p.Memory, false}, {"storage", c.Storage, p.Storage, true}} {
		if q.need == 0 {
			continue
		}
		have, err := ParseQuantity(q.have, q.storage)
		if err != nil || have < q.need {
			return fmt.Errorf("needs %d bytes of %s, the device reports %q", q.need, q.what, q.have)
		}
	}
	return nil
}

func deviceArchs(p CapabilityProperties) string {
	var out []string
	for _, c := range p.CPUs {
		out = append(out, c.Architecture)
	}
	if len(out) == 0 {
		return "none reported"
	}
	return strings.Join(out, ", ")
}

// matches evaluates a property selector on doc.
func (s *Selector) matches(doc any) (bool, string) {
	for _, e := range s.Expressions {
		v, found := Pointer(doc, e.Key)
		if !e.holds(v, found) {
			return false, fmt.Sprintf("%s %s %v does not hold", e.Key, e.Operator, e.Values)
		}
	}
	return true, ""
}

// matchLabels evaluates a label selector on labels.
func (s *Selector) matchLabels(labels map[string]string) (bool, string) {
	for _, e := range s.Expressions {
		v, found := labels[e.Key]
		var val any
		if found {
			val = v
		}
		if !e.holds(val, found) {
			return false, fmt.Sprintf("label %s %s %v does not hold", e.Key, e.Operator, e.Values)
		}
	}
	return true, ""
}

// holds evaluates the expression on the value v at its key (found false:
// absent). In and NotIn on an array test its elements: In holds when one
// element is among the values, NotIn when none is.
func (e Expression) holds(v any, found bool) bool {
	switch e.Operator {
	case "Exists":
		return found
	case "DoesNotExist":
		return !found
	case "In", "NotIn":
		in := false
		if found {
			if list, ok := v.([]any); ok {
				for _, x := range list {
					in = in || slices.Contains(e.Values, text(x))
				}
			} else {
				in = slices.Contains(e.Values, text(v))
			}
		}
		if e.Operator == "In" {
			return in
		}
		return !in
	case "Gt", "Lt":
		if !found || len(e.Values) != 1 {
			return false
		}
		x, err1 := strconv.ParseFloat(text(v), 64)
		y, err2 := strconv.ParseFloat(e.Values[0], 64)
		if err1 != nil || err2 != nil {
			return false
		}
		if e.Operator == "Gt" {
			return x > y
		}
		return x < y
	case "ContainsAll", "ContainsAny":
		list, ok := v.([]any)
		if !found || !ok || e.Item == nil {
			return false
		}
		return e.contains(list)
	}
	return false
}

// contains evaluates ContainsAll (every expression of the item selector
// holds for some element) and ContainsAny (some expression holds for some
// element). The spec says only "AND resp. OR"; this is that reading.
func (e Expression) contains(list []any) bool {
	all := e.Operator == "ContainsAll"
	for _, ex := range e.Item.Expressions {
		some := false
		for _, item := range list {
			v, found := Pointer(item, ex.Key)
			if ex.holds(v, found) {
				some = true
				break
			}
		}
		if all && !some {
			return false
		}
		if !all && some {
			return true
		}
	}
	return all && len(e.Item.Expressions) > 0
}

// text is the string form of a JSON scalar for comparisons.
func text(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	case int:
		return strconv.Itoa(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

// Pointer resolves the RFC 6901 JSON Pointer ptr in doc (decoded JSON).
func Pointer(doc any, ptr string) (any, bool) {
	if ptr == "" {
		return doc, true
	}
	if !strings.HasPrefix(ptr, "/") {
		return nil, false
	}
	cur := doc
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[tok]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) || (len(tok) > 1 && tok[0] == '0') {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
}
