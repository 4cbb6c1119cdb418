package config

import (
	"math"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/internal/yamlstrict"
)

// sizeRE matches a byte amount: a number and an optional unit.
var sizeRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)?$`)

// sizeUnits are the multipliers of the units sizeRE accepts.
var sizeUnits = map[string]float64{
	"": 1, "B": 1,
	"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
}

// sizeValue is the number of bytes of an amount such as 1048576, 512KiB,
// 1.5 MiB or 2GB, unbounded.
func sizeValue(s string) (float64, bool) {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, false
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, false
	}
	return f * sizeUnits[m[2]], true
}

// parseSize parses a byte amount such as 1048576, 512KiB, 1.5 MiB or 2GB
// that fits an int64.
func parseSize(s string) (int64, bool) {
	v, ok := sizeValue(s)
	if !ok || v >= math.MaxInt64 {
		return 0, false
	}
	return int64(v), true
}

// size returns the byte amount of the scalar n, at least min.
func (p *parser) size(n *yaml.Node, path string, min int64) (int64, bool) {
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!str" && n.ShortTag() != "!!int") {
		p.Errorf(n, path, "must be an amount of bytes such as 1MiB, 512KiB or 1048576, got %s", yamlstrict.Describe(n))
		return 0, false
	}
	v, ok := parseSize(n.Value)
	if !ok {
		p.Errorf(n, path, "must be an amount of bytes such as 1MiB, 512KiB or 1048576 (units B, KB, MB, GB, KiB, MiB, GiB), got %q", n.Value)
		return 0, false
	}
	switch {
	case v < min && min == 1:
		p.Errorf(n, path, "must be a positive number of bytes, got %s", n.Value)
		return 0, false
	case v < min:
		p.Errorf(n, path, "must be at least %d bytes, got %q", min, n.Value)
		return 0, false
	}
	return v, true
}

// minFree parses minFreeSpace: an amount of bytes, or a percentage of the
// file system such as 10%.
func (p *parser) minFree(n *yaml.Node, path string) (MinFreeSpace, bool) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" && strings.HasSuffix(strings.TrimSpace(n.Value), "%") {
		f, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(n.Value), "%")), 64)
		if err != nil || f < 0 || f > 90 {
			p.Errorf(n, path, "must be a percentage from 0%% to 90%% of the file system, or an amount of bytes such as 1GiB, got %q", n.Value)
			return MinFreeSpace{}, false
		}
		return MinFreeSpace{Percent: f}, true
	}
	v, ok := p.size(n, path, 0)
	return MinFreeSpace{Bytes: v}, ok
}

// bandwidth parses maxBandwidth: bytes per second, at least 1KiB.
func (p *parser) bandwidth(f fields, path string, dst *int64) {
	fv, ok := f["maxBandwidth"]
	if !ok {
		return
	}
	if v, ok := p.size(fv.Val, join(path, "maxBandwidth"), 1<<10); ok {
		*dst = v
	}
}

// limits parses a limits block into l: maxSize and maxFiles, and with
// registry (a source's) the caps of what a registry can make the agent
// read.
func (p *parser) limits(f fields, path string, l *Limits, registry bool) {
	known := []string{"maxSize", "maxFiles"}
	if registry {
		known = append(known, "maxTags", "maxTagPages", "maxReferrers", "maxSignatures")
	}
	lf, _ := p.mapping(f, path, "limits", known...)
	if lf == nil {
		return
	}
	lp := join(path, "limits")
	if fv, ok := lf["maxSize"]; ok {
		if i, ok := p.size(fv.Val, join(lp, "maxSize"), 1); ok {
			l.MaxSize = i
		}
	}
	for _, c := range []struct {
		name string
		dst  *int
	}{
		{"maxFiles", &l.MaxFiles},
		{"maxTags", &l.MaxTags},
		{"maxTagPages", &l.MaxTagPages},
		{"maxReferrers", &l.MaxReferrers},
		{"maxSignatures", &l.MaxSignatures},
	} {
		fv, ok := lf[c.name]
		if !ok {
			continue
		}
		if i, ok := p.Int(fv.Val, join(lp, c.name)); ok {
			if i < 1 || i > 1<<31-1 {
				p.Errorf(fv.Val, join(lp, c.name), "must be between 1 and %d, got %d", 1<<31-1, i)
			} else {
				*c.dst = int(i)
			}
		}
	}
}
