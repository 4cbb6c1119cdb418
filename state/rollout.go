package state

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/internal/labels"
	"github.com/berth-dev/berth/internal/yamlstrict"
)

const (
	// MaxWaves is the largest number of waves a rollout plan may have.
	MaxWaves = 32
	// Buckets is the number of hash buckets devices are spread over for
	// percentage waves: a percentage covers Percent*100 of them.
	Buckets = 10000
	// maxAfter bounds a wave's after: a year.
	maxAfter = 366 * 24 * time.Hour
)

// Rollout is a release's rollout plan: the waves in which devices adopt it.
// A device belongs to the first wave whose Selector matches its labels,
// else to the first percentage wave whose cumulative Percent covers its
// hash bucket (see package policy/rollout). Wave i opens at the release's
// signed created time plus Waves[i].After.
//
// Parse guarantees: at least one and at most MaxWaves waves with unique
// names; each has exactly one of Selector and Percent; After never
// decreases from a wave to the next, nor does Percent from a percentage
// wave to the next; and the last wave has Percent 100, so every device has
// a wave.
type Rollout struct {
	// Waves in the order they open.
	Waves []Wave
}

// Wave is one step of a rollout plan.
type Wave struct {
	// Name is a DNS label, unique in the plan.
	Name string
	// Selector, when not nil, holds the labels (key: value) a device must
	// all carry to be in this wave. Nil for a percentage wave.
	Selector map[string]string
	// Percent is the cumulative share, in (0, 100] with at most two
	// decimals, of the devices no selector took whose wave has opened once
	// this wave opens. 0 for a selector wave.
	Percent float64
	// After is how long after the release's created time the wave opens.
	After time.Duration
}

// Bucket returns the number of hash buckets (of Buckets) a percentage wave
// covers, cumulatively: a device whose bucket is below it is in this wave
// or an earlier one. 0 for a selector wave.
func (w Wave) Bucket() int { return int(math.Round(w.Percent * 100)) }

// rollout parses the rollout plan.
func (p *parser) rollout(n *yaml.Node) *Rollout {
	if yamlstrict.IsNull(n) {
		return nil
	}
	f := p.Mapping(n, "rollout", "waves")
	if f == nil {
		return nil
	}
	wf, ok := f["waves"]
	switch {
	case !ok:
		p.Missing(n, n, "rollout", "waves", " (the waves devices adopt the release in)")
		return nil
	case yamlstrict.IsNull(wf.Val) || wf.Val.Kind == yaml.SequenceNode && len(wf.Val.Content) == 0:
		p.Errorf(wf.Val, "rollout.waves", "needs at least one wave; the last one with percent: 100")
		return nil
	case !p.Kind(wf.Val, "rollout.waves", yaml.SequenceNode):
		return nil
	case len(wf.Val.Content) > MaxWaves:
		p.Errorf(wf.Val, "rollout.waves", "has %d waves, at most %d are allowed", len(wf.Val.Content), MaxWaves)
		return nil
	}
	before := p.Len()
	r := &Rollout{}
	names := map[string]int{}
	var prev *Wave      // the previous wave parsed whole
	var prevPct *Wave   // the previous percentage wave
	var last *yaml.Node // the last wave's node
	for i, wn := range wf.Val.Content {
		path := yamlstrict.Index("rollout.waves", i)
		w, afterN, pctN := p.wave(wn, path)
		last = wn
		if w == nil {
			prev = nil
			continue
		}
		if w.Name != "" {
			if first, dup := names[w.Name]; dup {
				p.Errorf(wn, yamlstrict.Join(path, "name"), "duplicate wave name %q (first at line %d)", w.Name, first)
			} else {
				names[w.Name] = wn.Line
			}
		}
		if prev != nil && w.After < prev.After {
			at := afterN
			if at == nil {
				at = wn
			}
			p.Errorf(at, yamlstrict.Join(path, "after"), "%v is before the previous wave's after (%v): waves open in order, after never goes backwards", w.After, prev.After)
		}
		if pctN != nil && prevPct != nil && w.Percent < prevPct.Percent {
			p.Errorf(pctN, yamlstrict.Join(path, "percent"), "%s is less than the previous percentage wave's %s: percentages are cumulative and never decrease",
				fmtPercent(w.Percent), fmtPercent(prevPct.Percent))
		}
		r.Waves = append(r.Waves, *w)
		prev = &r.Waves[len(r.Waves)-1]
		if pctN != nil {
			prevPct = prev
		}
	}
	if prev != nil && prev.Percent != 100 {
		p.Errorf(last, yamlstrict.Index("rollout.waves", len(wf.Val.Content)-1), "the last wave (%s) must cover every device: give it percent: 100", prev.Name)
	}
	if p.Len() != before {
		return nil
	}
	return r
}

// wave parses one wave and returns it with the nodes of its after and
// percent, when set.
func (p *parser) wave(n *yaml.Node, path string) (w *Wave, afterN, pctN *yaml.Node) {
	f := p.Mapping(n, path, "name", "selector", "percent", "after")
	if f == nil {
		return nil, nil, nil
	}
	before := p.Len()
	w = &Wave{}
	if _, ok := f["name"]; !ok {
		p.Missing(n, n, path, "name", " (a DNS label such as canary)")
	} else if vn, v, ok := p.StrField(f, path, "name"); ok {
		if len(v) > 63 || !labelRE.MatchString(v) {
			p.Errorf(vn, yamlstrict.Join(path, "name"), "invalid name %q: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit", v)
		} else {
			w.Name = v
		}
	}
	sf, hasSel := f["selector"]
	pf, hasPct := f["percent"]
	switch {
	case hasSel && hasPct:
		p.Errorf(pf.Key, path, "has both selector and percent: a wave takes the devices whose labels match, or a share of the others; split it into two waves")
	case !hasSel && !hasPct && !p.Typo(n, "selector") && !p.Typo(n, "percent"):
		p.Errorf(n, path, "needs selector (labels such as {ring: canary}) or percent (a cumulative share of the devices, such as 10)")
	case hasSel:
		w.Selector = p.selector(sf.Val, yamlstrict.Join(path, "selector"))
	case hasPct:
		if v, ok := p.Float(pf.Val, yamlstrict.Join(path, "percent")); ok {
			switch {
			case v <= 0 || v > 100:
				p.Errorf(pf.Val, yamlstrict.Join(path, "percent"), "must be more than 0 and at most 100, got %s", pf.Val.Value)
			case math.Abs(v*100-math.Round(v*100)) > 1e-6:
				p.Errorf(pf.Val, yamlstrict.Join(path, "percent"), "has more than two decimals (%s): devices are spread over %d buckets", pf.Val.Value, Buckets)
			default:
				w.Percent = v
				pctN = pf.Val
			}
		}
	}
	if af, ok := f["after"]; ok {
		if d, ok := p.Duration(af.Val, yamlstrict.Join(path, "after"), 0); ok {
			if d > maxAfter {
				p.Errorf(af.Val, yamlstrict.Join(path, "after"), "must be at most a year (%v), got %q", maxAfter, af.Val.Value)
			} else {
				w.After, afterN = d, af.Val
			}
		}
	}
	if p.Len() != before {
		return nil, nil, nil
	}
	return w, afterN, pctN
}

// selector parses the labels of a selector wave.
func (p *parser) selector(n *yaml.Node, path string) map[string]string {
	if yamlstrict.IsNull(n) || n.Kind == yaml.MappingNode && len(n.Content) == 0 {
		p.Errorf(n, path, "needs at least one label: an empty selector matches every device (use percent: 100)")
		return nil
	}
	if !p.Kind(n, path, yaml.MappingNode) {
		return nil
	}
	out := map[string]string{}
	p.Keys(n, path, func(k, v *yaml.Node) {
		kp := yamlstrict.Join(path, k.Value)
		if err := labels.CheckKey(k.Value); err != nil {
			p.Errorf(k, path, "%v", err)
			return
		}
		s, ok := p.Str(v, kp)
		if !ok {
			return
		}
		if err := labels.CheckValue(s); err != nil {
			p.Errorf(v, kp, "%v", err)
			return
		}
		out[k.Value] = s
	})
	return out
}

// fmtPercent writes a percentage as in the file.
func fmtPercent(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// String describes the wave for messages: "canary (ring=canary)" or
// "early (10%)".
func (w Wave) String() string {
	if w.Selector != nil {
		return fmt.Sprintf("%s (%s)", w.Name, formatSelector(w.Selector))
	}
	return fmt.Sprintf("%s (%s%%)", w.Name, fmtPercent(w.Percent))
}

// formatSelector writes a selector as k=v pairs, sorted.
func formatSelector(sel map[string]string) string {
	keys := slices.Sorted(maps.Keys(sel))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + sel[k]
	}
	return strings.Join(parts, ",")
}
