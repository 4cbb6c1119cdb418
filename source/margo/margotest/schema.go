package margotest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// The schemas of NOTES §4 and §6 (rc.3 DeviceCapabilitiesManifest and
// DeploymentStatusManifest), written out here independently of the
// client's encoder so that the double catches what the client gets wrong.
var (
	uuidRE     = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	deviceRE   = regexp.MustCompile(`^[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$`)
	memRE      = regexp.MustCompile(`^[0-9]+(Ki|Mi|Gi)$`)
	storRE     = regexp.MustCompile(`^[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei)$`)
	extRE      = regexp.MustCompile(`^x-[a-z][a-z0-9-]*-extensions$`)
	states     = []string{"pending", "installing", "installed", "removing", "removed", "failed"}
	severity   = []string{"removed", "installed", "pending", "installing", "removing", "failed"}
	archEnum   = []string{"amd64", "arm64", "arm"}
	periphEnum = []string{"gpu", "display", "camera", "microphone", "speaker"}
	ifaceEnum  = []string{"ethernet", "wifi", "cellular", "bluetooth", "usb", "canbus", "rs232"}
	rtEnum     = []string{"oci", "custom"}
	dtEnum     = []string{"helm", "compose", "custom"}
)

type checker struct{ errs []string }

func (c *checker) add(path, format string, args ...any) {
	c.errs = append(c.errs, path+": "+fmt.Sprintf(format, args...))
}

// object checks v is an object with the required keys and no keys but
// allowed (and extensions); it returns it.
func (c *checker) object(path string, v any, required, optional []string) map[string]any {
	m, ok := v.(map[string]any)
	if !ok {
		c.add(path, "must be an object")
		return nil
	}
	for _, k := range required {
		if _, ok := m[k]; !ok {
			c.add(path, "missing required property %q", k)
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !slices.Contains(required, k) && !slices.Contains(optional, k) && !extRE.MatchString(k) {
			c.add(path, "additional property %q not allowed", k)
		}
	}
	return m
}

func (c *checker) str(path string, v any, re *regexp.Regexp, enum []string) string {
	s, ok := v.(string)
	switch {
	case !ok:
		c.add(path, "must be a string")
	case s == "":
		c.add(path, "must not be empty")
	case re != nil && !re.MatchString(s):
		c.add(path, "%q does not match %s", s, re)
	case enum != nil && !slices.Contains(enum, s):
		c.add(path, "%q is not one of %v", s, enum)
	}
	return s
}

func (c *checker) integer(path string, v any, minimum int64) {
	n, ok := v.(json.Number)
	if !ok {
		c.add(path, "must be an integer")
		return
	}
	if i, err := strconv.ParseUint(n.String(), 10, 64); err != nil || (minimum > 0 && i < uint64(minimum)) {
		c.add(path, "must be an integer >= %d, got %s", minimum, n)
	}
}

func (c *checker) list(path string, v any, minItems int) []any {
	l, ok := v.([]any)
	if !ok {
		c.add(path, "must be an array")
		return nil
	}
	if len(l) < minItems {
		c.add(path, "needs at least %d items", minItems)
	}
	return l
}

func decode(body []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("more than one JSON value")
	}
	return v, nil
}

// ValidateCapabilities checks a capabilities body for a workload-hosting
// device, PUT at deviceID.
func ValidateCapabilities(body []byte, deviceID string) []string {
	v, err := decode(body)
	if err != nil {
		return []string{"body: " + err.Error()}
	}
	c := &checker{}
	root := c.object("$", v, []string{"properties"}, []string{"labels"})
	if root == nil {
		return c.errs
	}
	props := c.object("properties", root["properties"],
		[]string{"id", "vendor", "modelNumber", "serialNumber", "cpus", "memory", "storage", "peripherals", "interfaces", "otelCollector", "supportedRuntimes", "supportedDeploymentTypes"}, nil)
	if props != nil {
		if id := c.str("properties.id", props["id"], deviceRE, nil); id != deviceID && id != "" {
			c.add("properties.id", "%q differs from the device id of the path %q", id, deviceID)
		}
		for _, k := range []string{"vendor", "modelNumber", "serialNumber"} {
			c.str("properties."+k, props[k], nil, nil)
		}
		for i, cpu := range c.list("properties.cpus", props["cpus"], 1) {
			p := fmt.Sprintf("properties.cpus[%d]", i)
			if m := c.object(p, cpu, []string{"cores"}, []string{"architecture"}); m != nil {
				c.integer(p+".cores", m["cores"], 1)
				if a, ok := m["architecture"]; ok {
					c.str(p+".architecture", a, nil, archEnum)
				}
			}
		}
		c.str("properties.memory", props["memory"], memRE, nil)
		c.str("properties.storage", props["storage"], storRE, nil)
		for i, per := range c.list("properties.peripherals", props["peripherals"], 0) {
			p := fmt.Sprintf("properties.peripherals[%d]", i)
			if m := c.object(p, per, []string{"type"}, []string{"manufacturer", "model"}); m != nil {
				c.str(p+".type", m["type"], nil, periphEnum)
			}
		}
		for i, in := range c.list("properties.interfaces", props["interfaces"], 0) {
			p := fmt.Sprintf("properties.interfaces[%d]", i)
			if m := c.object(p, in, []string{"type"}, nil); m != nil {
				c.str(p+".type", m["type"], nil, ifaceEnum)
			}
		}
		if _, ok := props["otelCollector"].(bool); !ok {
			c.add("properties.otelCollector", "must be a boolean")
		}
		for i, r := range c.list("properties.supportedRuntimes", props["supportedRuntimes"], 1) {
			c.str(fmt.Sprintf("properties.supportedRuntimes[%d]", i), r, nil, rtEnum)
		}
		for i, r := range c.list("properties.supportedDeploymentTypes", props["supportedDeploymentTypes"], 1) {
			c.str(fmt.Sprintf("properties.supportedDeploymentTypes[%d]", i), r, nil, dtEnum)
		}
	}
	if l, ok := root["labels"]; ok {
		lm, isMap := l.(map[string]any)
		if !isMap {
			c.add("labels", "must be an object")
		}
		for k, v := range lm {
			switch x := v.(type) {
			case string, json.Number, bool:
			case []any:
				for _, e := range x {
					if _, s := e.(string); !s {
						if _, n := e.(json.Number); !n {
							c.add("labels."+k, "arrays hold strings or numbers")
						}
					}
				}
			default:
				c.add("labels."+k, "must be a string, number, boolean or array")
			}
		}
	}
	return c.errs
}

// ValidateStatus checks a status body POSTed for deployment id.
func ValidateStatus(body []byte, id string) []string {
	v, err := decode(body)
	if err != nil {
		return []string{"body: " + err.Error()}
	}
	c := &checker{}
	root := c.object("$", v, []string{"deploymentId", "adoptedManifestVersion", "status", "components"}, []string{"deviceId"})
	if root == nil {
		return c.errs
	}
	if d := c.str("deploymentId", root["deploymentId"], uuidRE, nil); d != id {
		c.add("deploymentId", "%q differs from the id of the path %q", d, id)
	}
	if d, ok := root["deviceId"]; ok {
		c.str("deviceId", d, deviceRE, nil)
	}
	if _, ok := root["adoptedManifestVersion"]; ok {
		c.integer("adoptedManifestVersion", root["adoptedManifestVersion"], 1)
	}
	overall := ""
	if st := c.object("status", root["status"], []string{"state"}, []string{"error"}); st != nil {
		overall = c.str("status.state", st["state"], nil, states)
		if e, ok := st["error"]; ok {
			c.statusError("status.error", e)
		}
	}
	worst := ""
	names := map[string]bool{}
	for i, comp := range c.list("components", root["components"], 1) {
		p := fmt.Sprintf("components[%d]", i)
		m := c.object(p, comp, []string{"name", "state"}, []string{"error"})
		if m == nil {
			continue
		}
		n := c.str(p+".name", m["name"], nil, nil)
		if names[n] {
			c.add(p+".name", "component %q listed twice", n)
		}
		names[n] = true
		s := c.str(p+".state", m["state"], nil, states)
		if slices.Index(severity, s) > slices.Index(severity, worst) {
			worst = s
		}
		if e, ok := m["error"]; ok {
			c.statusError(p+".error", e)
		}
	}
	if worst != "" && overall != "" && overall != worst {
		c.add("status.state", "%q is not the most severe component state %q", overall, worst)
	}
	return c.errs
}

func (c *checker) statusError(path string, v any) {
	if m := c.object(path, v, []string{"code", "source", "message"}, nil); m != nil {
		for _, k := range []string{"code", "source", "message"} {
			if s, ok := m[k].(string); !ok || strings.TrimSpace(s) == "" {
				c.add(path+"."+k, "must be a non-empty string")
			}
		}
	}
}
