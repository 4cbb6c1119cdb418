package config

import (
	"time"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/internal/labels"
	"github.com/berth-dev/berth/internal/yamlstrict"
	"github.com/berth-dev/berth/policy/window"
)

// fleet parses what places the device in a fleet: device, and windows
// (global, then each source's, which override the global ones field by
// field).
func (p *parser) fleet(f fields, c *Config, srcNodes []srcNode) {
	p.device(f, c)
	if wf, ok := f["windows"]; ok {
		c.Windows = p.windows(wf.Val, "windows", Windows{})
	}
	for i, sn := range srcNodes {
		c.Sources[i].Windows = c.Windows
		if sn.n.Kind != yaml.MappingNode {
			continue
		}
		for j := 0; j+1 < len(sn.n.Content); j += 2 {
			if k := sn.n.Content[j]; k.Value == "windows" && k.Kind == yaml.ScalarNode {
				c.Sources[i].Windows = p.windows(sn.n.Content[j+1], join(sn.path, "windows"), c.Windows)
			}
		}
	}
}

// device parses device.
func (p *parser) device(f fields, c *Config) {
	df, _ := p.mapping(f, "", "device", "id", "idFile", "labels")
	if df == nil {
		return
	}
	if vn, v, ok := p.StrField(df, "device", "id"); ok {
		if err := labels.CheckValue(v); err != nil || v == "" {
			p.Errorf(vn, "device.id", "invalid device id %q: use 1 to 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", v)
		} else {
			c.Device.ID = v
		}
	}
	p.fileField(df, "device", "idFile", &c.Device.IDFile)
	if _, ok := df["idFile"]; ok {
		if _, both := df["id"]; both {
			p.Errorf(df["idFile"].Key, "device", "has both id and idFile: the id is device.id, or derived from idFile; remove one of them")
		}
	}
	lf, ok := df["labels"]
	if !ok || yamlstrict.IsNull(lf.Val) || !p.Kind(lf.Val, "device.labels", yaml.MappingNode) {
		return
	}
	c.Device.Labels = map[string]string{}
	p.Keys(lf.Val, "device.labels", func(k, v *yaml.Node) {
		if err := labels.CheckKey(k.Value); err != nil {
			p.Errorf(k, "device.labels", "%v", err)
			return
		}
		path := join("device.labels", k.Value)
		s, ok := p.Str(v, path)
		if !ok {
			return
		}
		if err := labels.CheckValue(s); err != nil {
			p.Errorf(v, path, "%v", err)
			return
		}
		c.Device.Labels[k.Value] = s
	})
}

// windows parses windows: apply and download, each "always" or a list of
// windows; a field not set keeps its value in inherit.
func (p *parser) windows(n *yaml.Node, path string, inherit Windows) Windows {
	out := inherit
	if yamlstrict.IsNull(n) {
		return out
	}
	f := p.Mapping(n, path, "apply", "download")
	if f == nil {
		return out
	}
	if af, ok := f["apply"]; ok {
		out.Apply = p.schedule(af.Val, join(path, "apply"))
	}
	if df, ok := f["download"]; ok {
		out.Download = p.schedule(df.Val, join(path, "download"))
	}
	return out
}

// schedule parses "always" or a non-empty list of windows.
func (p *parser) schedule(n *yaml.Node, path string) window.Schedule {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" && n.Value == "always" {
		return nil
	}
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		p.Errorf(n, path, "must be always or a list of windows such as {days: [mon, tue], start: \"22:00\", end: \"05:00\", timezone: Europe/Berlin}, got %s", describeNode(n))
		return nil
	}
	s := window.Schedule{}
	for i, wn := range n.Content {
		if w, ok := p.window(wn, yamlstrict.Index(path, i)); ok {
			s = append(s, w)
		}
	}
	return s
}

// window parses one window.
func (p *parser) window(n *yaml.Node, path string) (window.Window, bool) {
	f := p.Mapping(n, path, "days", "start", "end", "timezone")
	if f == nil {
		return window.Window{}, false
	}
	before := p.Len()
	var days []string
	if df, ok := f["days"]; ok {
		days = p.Strings(df.Val, join(path, "days"), nil)
	}
	dset, err := window.ParseDays(days)
	if err != nil {
		p.Errorf(f["days"].Val, join(path, "days"), "%v", err)
	}
	clock := func(name, why string, end bool) int {
		if _, ok := f[name]; !ok {
			p.Missing(n, n, path, name, why)
			return 0
		}
		vn, v, ok := p.StrField(f, path, name)
		if !ok {
			return 0
		}
		m, err := window.ParseClock(v, end)
		if err != nil {
			p.Errorf(vn, join(path, name), "%v", err)
		}
		return m
	}
	start := clock("start", ` (a time of day such as "22:00")`, false)
	end := clock("end", ` (a time of day such as "05:00"; before start: the next day)`, true)
	var loc *time.Location
	if _, set := f["timezone"]; !set {
		p.Missing(n, n, path, "timezone", " (an IANA time zone such as Europe/Berlin, or UTC)")
	} else if tzn, tz, ok := p.StrField(f, path, "timezone"); ok {
		if loc, err = window.LoadLocation(tz); err != nil {
			p.Errorf(tzn, join(path, "timezone"), "%v", err)
		}
	}
	if p.Len() != before {
		return window.Window{}, false
	}
	w, err := window.New(dset, start, end, loc)
	if err != nil {
		p.Errorf(n, path, "%v", err)
		return window.Window{}, false
	}
	return w, true
}

// describeNode names what n is, for errors.
func describeNode(n *yaml.Node) string {
	if n.Kind == yaml.SequenceNode {
		return "an empty list"
	}
	return yamlstrict.Describe(n)
}
