package labels

import (
	"maps"
	"slices"
	"strings"
)

// reserved are label names the agent's series use themselves, or that
// Prometheus gives a meaning: a device label key among them gets the
// prefix "device_".
var reserved = map[string]bool{
	"device": true, "source": true, "digest": true, "version": true, "revision": true,
	"outcome": true, "wave": true, "reason": true, "result": true, "host": true,
	"method": true, "code": true, "le": true, "quantile": true, "job": true, "instance": true,
}

// PrometheusName is the Prometheus label name a device label key is
// reported under: characters other than ASCII letters, digits and '_'
// become '_', a leading digit gets a '_' before it, and a key that the
// agent's own series use (device, source, digest, version, revision,
// outcome, wave, reason, result, host, method, code, le, quantile, job,
// instance) or that starts with "__" gets the prefix "device_". Keys that
// are already label names (ring, line, site) are reported unchanged.
//
// The agent reports its labels under these names, and the publishing side
// (berth rollout status) maps a rollout plan's selector keys with the same
// function before it matches them against what Prometheus holds.
func PrometheusName(key string) string {
	var b strings.Builder
	for i, r := range key {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_':
			b.WriteRune(r)
		case r >= '0' && r <= '9':
			if i == 0 {
				b.WriteByte('_')
			}
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := b.String()
	if s == "" || reserved[s] || strings.HasPrefix(s, "__") {
		s = "device_" + s
	}
	return s
}

// PrometheusLabels returns labels keyed by PrometheusName; of keys that map
// to the same name, the first in sorted key order is kept.
func PrometheusLabels(labels map[string]string) map[string]string {
	out := make(map[string]string, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		n := PrometheusName(k)
		if _, dup := out[n]; !dup {
			out[n] = labels[k]
		}
	}
	return out
}
