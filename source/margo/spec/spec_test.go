package spec

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/errdef"
)

const (
	d1  = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	d2  = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	id1 = "0b6c1f1e-2a44-4c7e-9d51-7e3f5a0c9b21"
	id2 = "1b6c1f1e-2a44-4c7e-9d51-7e3f5a0c9b21"
)

func manifestJSON(version, bundle, deps string) string {
	return `{"manifestVersion": ` + version + `, "bundle": ` + bundle + `, "deployments": [` + deps + `]}`
}

var (
	goodBundle = `{"mediaType": "application/vnd.margo.bundle.v1+tar+gzip", "digest": "` + d2 + `", "sizeBytes": 2048, "url": "/api/v1/bundles/` + d2 + `"}`
	goodDep    = `{"deploymentId": "` + id1 + `", "digest": "` + d1 + `", "url": "/api/v1/deployments/` + id1 + `/` + d1 + `"}`
)

func TestParseManifest(t *testing.T) {
	m, err := ParseManifest([]byte(manifestJSON("7", goodBundle, goodDep)))
	if err != nil {
		t.Fatal(err)
	}
	if m.ManifestVersion != 7 || m.Bundle == nil || m.Bundle.Digest != d2 || m.Bundle.SizeBytes != 2048 || len(m.Deployments) != 1 || m.Deployments[0].DeploymentID != id1 {
		t.Errorf("manifest = %+v", m)
	}
	if d, ok := m.Deployment(id1); !ok || d.Digest != d1 {
		t.Errorf("Deployment(%s) = %+v, %v", id1, d, ok)
	}
	empty, err := ParseManifest([]byte(`{"manifestVersion": 18446744073709551615, "bundle": null, "deployments": [], "x-acme-extensions": {}}`))
	if err != nil || empty.Bundle != nil || len(empty.Deployments) != 0 || empty.ManifestVersion != 1<<64-1 {
		t.Errorf("empty manifest = %+v, %v", empty, err)
	}
}

func TestParseManifestBad(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"not json", `{`, "invalid JSON"},
		{"two values", `{} {}`, "more than one value"},
		{"duplicate key", `{"manifestVersion": 1, "manifestVersion": 2, "bundle": null, "deployments": []}`, `duplicate key "manifestVersion"`},
		{"array", `[]`, "must be an object"},
		{"zero version", manifestJSON("0", "null", ""), "manifestVersion: must be at least 1"},
		{"negative version", manifestJSON("-1", "null", ""), "manifestVersion: must be an integer from 0"},
		{"float version", manifestJSON("1.5", "null", ""), "manifestVersion: must be an integer"},
		{"overflow version", manifestJSON("18446744073709551616", "null", ""), "manifestVersion: must be an integer"},
		{"string version", manifestJSON(`"3"`, "null", ""), "must be an integer, got the string"},
		{"missing bundle", `{"manifestVersion": 1, "deployments": []}`, `missing required field "bundle"`},
		{"bundle with no deployments", manifestJSON("1", goodBundle, ""), "bundle: must be null when deployments is empty"},
		{"null bundle with deployments", manifestJSON("1", "null", goodDep), "bundle: must not be null"},
		{"bad media type", manifestJSON("1", strings.Replace(goodBundle, "tar+gzip", "tar", 1), goodDep), "bundle.mediaType"},
		{"sha512", manifestJSON("1", goodBundle, strings.Replace(goodDep, `"digest": "sha256:`, `"digest": "sha512:`, 1)), `unsupported digest algorithm "sha512"`},
		{"uppercase digest", manifestJSON("1", goodBundle, strings.Replace(goodDep, `"digest": "sha256:1111`, `"digest": "sha256:AAAA`, 1)), "64 lowercase hex"},
		{"bad id", manifestJSON("1", goodBundle, strings.Replace(goodDep, id1, "web", 1)), "must be a UUID"},
		{"duplicate id", manifestJSON("1", goodBundle, goodDep+","+goodDep), "is listed twice"},
		{"absolute url", manifestJSON("1", goodBundle, strings.Replace(goodDep, `"url": "/api`, `"url": "https://evil.example/api`, 1)), "not an absolute URL"},
		{"scheme-relative url", manifestJSON("1", goodBundle, strings.Replace(goodDep, `"url": "/api`, `"url": "//evil.example/api`, 1)), "not an absolute URL"},
		{"dot segments", manifestJSON("1", goodBundle, strings.Replace(goodDep, `"url": "/api`, `"url": "/x/../api`, 1)), ". or .. segments"},
		{"unknown field", `{"manifestVersion": 1, "bundle": null, "deployments": [], "extra": 1}`, `unknown field "extra"`},
		{"too deep", strings.Repeat("[", 40) + strings.Repeat("]", 40), "nested deeper"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseManifest([]byte(tt.body))
			if err == nil {
				t.Fatalf("parsed: %+v", m)
			}
			if !errors.Is(err, ErrInvalidManifest) || !errors.Is(err, errdef.ErrRefused) {
				t.Errorf("error %v is not ErrInvalidManifest/refused", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

const currentYAML = `id: 0b6c1f1e-2a44-4c7e-9d51-7e3f5a0c9b21
metadata:
  name: line-monitor
  namespace: margo-apps
  deviceId: press-line/press-42
  labels: {team: ot}
spec:
  applicationId: acme-line-monitor
  x-acme-extensions: {anything: [1, 2]}
  deploymentProfile:
    type: compose
    components:
      - name: collector
        properties: {repository: oci://registry.local:5000/acme/collector, revision: 1.4.0_build.7, wait: false, timeout: 5m0s}
        x-acme-extensions: {ignored: true}
      - name: ui
        properties: {repository: oci://registry.local:5000/acme/ui, revision: 2.0.0}
    deviceConstraints:
      capacityRequirements: {cpu: {cores: 1, architectures: [arm64, amd64]}, memory: 512Mi}
      eligibilityRules:
        - propertySelector:
            matchExpressions: [{key: /supportedDeploymentTypes, operator: In, values: [compose]}]
  parameters:
    pollSeconds:
      value: "30"
      targets: [{pointer: POLL_SECONDS, components: [collector]}, {pointer: ENV.POLL, components: [collector, ui]}]
    replicas:
      value: 3
      targets: [{pointer: replicas, components: [ui]}]
`

const legacyYAML = `apiVersion: application.margo.org/v1alpha1
kind: ApplicationDeployment
metadata:
  name: hello
  annotations:
    id: 1b6c1f1e-2a44-4c7e-9d51-7e3f5a0c9b21
    applicationId: hello-app
spec:
  deploymentProfile:
    type: helm.v3
    components:
      - name: hello
        properties: {repository: oci://ghcr.io/acme/charts/hello, revision: 0.1.0}
`

func TestParseDeployment(t *testing.T) {
	d, err := ParseDeployment("current.yaml", []byte(currentYAML))
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != id1 || d.ApplicationID != "acme-line-monitor" || d.Envelope != EnvelopeCurrent || d.Name != "line-monitor" || d.Namespace != "margo-apps" || d.DeviceID != "press-line/press-42" || d.Labels["team"] != "ot" {
		t.Errorf("deployment = %+v", d)
	}
	c := d.Profile.Components
	if d.Profile.Type != TypeCompose || len(c) != 2 || c[0].Name != "collector" || c[0].Wait || c[0].Timeout != 5*time.Minute || c[0].Version() != "1.4.0+build.7" || !c[1].Wait || c[1].Timeout != 0 {
		t.Errorf("profile = %+v", d.Profile)
	}
	if c[0].Reference() != "registry.local:5000/acme/collector:1.4.0_build.7" {
		t.Errorf("reference = %s", c[0].Reference())
	}
	dc := d.Profile.Constraints
	if dc == nil || dc.Capacity.CPUCores != 1 || dc.Capacity.Memory != 512<<20 || len(dc.Rules) != 1 || dc.Rules[0].Property.Expressions[0].Operator != "In" {
		t.Errorf("constraints = %+v", dc)
	}
	if p := d.Parameters["pollSeconds"]; p.Value != "30" || len(p.Targets) != 2 || p.Targets[1].Components[1] != "ui" {
		t.Errorf("parameter = %+v", p)
	}
	if p := d.Parameters["replicas"]; p.Value != int64(3) {
		t.Errorf("replicas = %#v", p.Value)
	}
	if n, err := d.Parameters["pollSeconds"].Targets[1].EnvName(); n != "POLL" || err != nil {
		t.Errorf("EnvName = %q, %v", n, err)
	}

	l, err := ParseDeployment("legacy.yaml", []byte(legacyYAML))
	if err != nil {
		t.Fatal(err)
	}
	if l.ID != id2 || l.ApplicationID != "hello-app" || l.Envelope != EnvelopeLegacy || l.Profile.Type != TypeHelm || l.Namespace != "" {
		t.Errorf("legacy = %+v", l)
	}
	// intermediate: top-level id, applicationId in annotations
	inter := strings.Replace(strings.Replace(legacyYAML, "    id: 1b6c", "    x: 1b6c", 1), "metadata:", "id: "+id2+"\nmetadata:", 1)
	inter = strings.Replace(inter, "    x: "+id2[:4], "    other: "+id2[:4], 1)
	if i, err := ParseDeployment("inter.yaml", []byte(inter)); err != nil || i.ID != id2 {
		t.Errorf("intermediate: %+v, %v", i, err)
	}
}

func TestParseDeploymentBad(t *testing.T) {
	tests := []struct {
		name, from, to, want string
	}{
		{"unknown top field", "metadata:", "extra: 1\nmetadata:", `unknown field "extra"`},
		{"bad id", id1, "not-a-uuid", "id: must be a UUID"},
		{"bad type", "type: compose", "type: kustomize", "must be helm or compose"},
		{"packageLocation", "properties: {repository: oci://registry.local:5000/acme/ui, revision: 2.0.0}", "properties: {packageLocation: https://x/y.tgz, keyLocation: https://x/k}", "pre-rc.3 Compose package form"},
		{"http repository", "oci://registry.local:5000/acme/ui", "https://registry.local/acme/ui", "must be an oci:// repository"},
		{"tagged repository", "oci://registry.local:5000/acme/ui", "oci://registry.local:5000/acme/ui:1.0", "must be an oci:// repository"},
		{"v revision", "revision: 2.0.0", "revision: v2.0.0", "SemVer 2.0 version"},
		{"plus revision", "revision: 2.0.0", "revision: 2.0.0+b", "SemVer 2.0 version"},
		{"bad timeout", "timeout: 5m0s", "timeout: 5m", "minutes and seconds"},
		{"unknown component property", "wait: false,", "wait: false, retries: 3,", `unknown field "retries"`},
		{"duplicate component", "- name: ui", "- name: collector", "duplicate component name"},
		{"unknown target component", "components: [ui]}]", "components: [db]}]", `no component "db"`},
		{"bad device id", "deviceId: press-line/press-42", "deviceId: 'a b'", "metadata.deviceId"},
		{"missing namespace", "  namespace: margo-apps\n", "", `missing required field "namespace"`},
		{"bad operator", "operator: In", "operator: Like", "must be one of In"},
		{"gt text", "operator: In, values: [compose]", "operator: Gt, values: [x]", "Gt needs a number"},
		{"duplicate key", "  name: line-monitor\n", "  name: line-monitor\n  name: again\n", "duplicate field"},
		{"list value", `value: "30"`, "value: [1]", "must be a string, number or boolean"},
		{"anchor alias", "labels: {team: ot}", "labels: &l {team: ot}\n  annotations: *l", "aliases are not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := strings.Replace(currentYAML, tt.from, tt.to, 1)
			if doc == currentYAML {
				t.Fatalf("replacement %q not found", tt.from)
			}
			d, err := ParseDeployment("d.yaml", []byte(doc))
			if err == nil {
				t.Fatalf("parsed: %+v", d)
			}
			if !errors.Is(err, ErrInvalidDeployment) || !errors.Is(err, errdef.ErrRefused) {
				t.Errorf("error %v is not ErrInvalidDeployment", err)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "d.yaml:") {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
	if _, err := ParseDeployment("big.yaml", make([]byte, MaxDeploymentSize+1)); !errors.Is(err, ErrInvalidDeployment) {
		t.Errorf("oversized: %v", err)
	}
}

func TestParseProblem(t *testing.T) {
	p, err := ParseProblem([]byte(`{"type": "https://docs.margo.org/specification/problem-types#not-authorized", "title": "Client Relationship Retired", "status": 403, "detail": "gone", "retryable": false, "backoffStrategy": "none", "errors": [{"field": "x", "message": "y"}], "ext": {"a": 1}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !p.Is("not-authorized") || p.Status != 403 || p.Retryable == nil || *p.Retryable || len(p.Errors) != 1 {
		t.Errorf("problem = %+v", p)
	}
	if s := p.String(); s != "403 Client Relationship Retired: gone (not-authorized); x: y" {
		t.Errorf("String = %q", s)
	}
	blank, err := ParseProblem([]byte(`{"status": 503, "retryable": true, "retryAfterSeconds": 30, "backoffStrategy": "exponential"}`))
	if err != nil || blank.Type != ProblemAboutBlank || *blank.RetryAfterSeconds != 30 {
		t.Errorf("blank = %+v, %v", blank, err)
	}
	for _, bad := range []string{`[]`, `{"status": "503"}`, `{"retryable": "yes"}`, `{"status": 42}`, `{"errors": {}}`, `{"type": 1}`} {
		if _, err := ParseProblem([]byte(bad)); !errors.Is(err, ErrInvalidProblem) {
			t.Errorf("%s: err = %v", bad, err)
		}
	}
}

func caps() *Capabilities {
	return &Capabilities{
		Properties: CapabilityProperties{
			ID: "press-42", Vendor: "Acme", ModelNumber: "E-100", SerialNumber: "SN1",
			CPUs: []CPU{{Cores: 4, Architecture: "arm64"}}, Memory: "8Gi", Storage: "64Gi",
			Peripherals: []Peripheral{{Type: "gpu", Manufacturer: "NVIDIA"}, {Type: "camera"}},
			Interfaces:  []Interface{{Type: "ethernet"}}, SupportedRuntimes: []string{"oci"},
			SupportedDeploymentTypes: []string{"compose"},
		},
		Labels: map[string]string{"line": "7", "zone": "north"},
	}
}

func TestEligible(t *testing.T) {
	sel := func(exprs ...Expression) *Selector { return &Selector{Expressions: exprs} }
	tests := []struct {
		name string
		dc   *DeviceConstraints
		want bool
	}{
		{"nil", nil, true},
		{"no rules", &DeviceConstraints{}, true},
		{"cores ok", &DeviceConstraints{Capacity: &Capacity{CPUCores: 4, Architectures: []string{"arm64"}, Memory: 8 << 30}}, true},
		{"too many cores", &DeviceConstraints{Capacity: &Capacity{CPUCores: 5}}, false},
		{"wrong arch", &DeviceConstraints{Capacity: &Capacity{Architectures: []string{"amd64"}}}, false},
		{"too much storage", &DeviceConstraints{Capacity: &Capacity{Storage: 65 << 30}}, false},
		{"In on array", &DeviceConstraints{Rules: []Rule{{Property: sel(Expression{Key: "/supportedDeploymentTypes", Operator: "In", Values: []string{"compose"}})}}}, true},
		{"NotIn on array", &DeviceConstraints{Rules: []Rule{{Property: sel(Expression{Key: "/supportedDeploymentTypes", Operator: "NotIn", Values: []string{"compose"}})}}}, false},
		{"vendor In", &DeviceConstraints{Rules: []Rule{{Property: sel(Expression{Key: "/vendor", Operator: "In", Values: []string{"acme"}})}}}, false},
		{"Exists", &DeviceConstraints{Rules: []Rule{{Property: sel(Expression{Key: "/cpus/0/cores", Operator: "Exists"})}}}, true},
		{"DoesNotExist", &DeviceConstraints{Rules: []Rule{{Property: sel(Expression{Key: "/nothing", Operator: "DoesNotExist"})}}}, true},
		{"Gt", &DeviceConstraints{Rules: []Rule{{Property: sel(Expression{Key: "/cpus/0/cores", Operator: "Gt", Values: []string{"2"}})}}}, true},
		{"Lt", &DeviceConstraints{Rules: []Rule{{Property: sel(Expression{Key: "/cpus/0/cores", Operator: "Lt", Values: []string{"2"}})}}}, false},
		{"ContainsAny", &DeviceConstraints{Rules: []Rule{{Property: sel(Expression{Key: "/peripherals", Operator: "ContainsAny", Item: sel(Expression{Key: "/type", Operator: "In", Values: []string{"display"}}, Expression{Key: "/manufacturer", Operator: "In", Values: []string{"NVIDIA"}})})}}}, true},
		{"ContainsAll", &DeviceConstraints{Rules: []Rule{{Property: sel(Expression{Key: "/peripherals", Operator: "ContainsAll", Item: sel(Expression{Key: "/type", Operator: "In", Values: []string{"display"}}, Expression{Key: "/manufacturer", Operator: "In", Values: []string{"NVIDIA"}})})}}}, false},
		{"ContainsAll ok", &DeviceConstraints{Rules: []Rule{{Property: sel(Expression{Key: "/peripherals", Operator: "ContainsAll", Item: sel(Expression{Key: "/type", Operator: "In", Values: []string{"camera"}}, Expression{Key: "/manufacturer", Operator: "In", Values: []string{"NVIDIA"}})})}}}, true},
		{"labels", &DeviceConstraints{Rules: []Rule{{Label: sel(Expression{Key: "line", Operator: "In", Values: []string{"7"}})}}}, true},
		{"both selectors need both", &DeviceConstraints{Rules: []Rule{{Label: sel(Expression{Key: "line", Operator: "In", Values: []string{"7"}}), Property: sel(Expression{Key: "/vendor", Operator: "In", Values: []string{"Other"}})}}}, false},
		{"rules OR", &DeviceConstraints{Rules: []Rule{{Label: sel(Expression{Key: "line", Operator: "In", Values: []string{"8"}})}, {Label: sel(Expression{Key: "zone", Operator: "Exists"})}}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.dc.Eligible(caps())
			if (err == nil) != tt.want {
				t.Fatalf("Eligible = %v, want eligible %v", err, tt.want)
			}
			if err != nil && !errors.Is(err, ErrNotEligible) {
				t.Errorf("error %v is not ErrNotEligible", err)
			}
		})
	}
}

func TestCapabilitiesValidate(t *testing.T) {
	if err := caps().Validate(); err != nil {
		t.Fatal(err)
	}
	c := caps()
	c.Properties.CPUs[0].Architecture = "x86"
	c.Properties.Memory = "8 Gi"
	c.Properties.SupportedDeploymentTypes = nil
	c.Properties.Vendor = ""
	err := c.Validate()
	for _, want := range []string{"architecture", "properties.memory", "supportedDeploymentTypes", "properties.vendor"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
}

func TestStatus(t *testing.T) {
	fail := &StatusError{Code: "PULL", Source: "db", Message: "manifest unknown"}
	tests := []struct {
		states []string
		want   string
	}{
		{[]string{"installed", "installed"}, "installed"},
		{[]string{"installed", "installing"}, "installing"},
		{[]string{"pending", "installed"}, "pending"},
		{[]string{"removed", "removed"}, "removed"},
		{[]string{"removed", "removing"}, "removing"},
		{[]string{"installing", "failed", "removing"}, "failed"},
	}
	for _, tt := range tests {
		var cs []ComponentStatus
		for i, s := range tt.states {
			c := ComponentStatus{Name: string(rune('a' + i)), State: s}
			if s == StateFailed {
				c.Error = fail
			}
			cs = append(cs, c)
		}
		st := NewStatus(id1, "press-42", "line-monitor", 7, cs)
		if st.Status.State != tt.want {
			t.Errorf("%v: overall %q, want %q", tt.states, st.Status.State, tt.want)
		}
		if err := st.Validate(); err != nil {
			t.Errorf("%v: %v", tt.states, err)
		}
		if tt.want == StateFailed && (st.Status.Error == nil || st.Status.Error.Source != "line-monitor" || st.Status.Error.Code != "PULL") {
			t.Errorf("overall error = %+v", st.Status.Error)
		}
	}
	bad := DeploymentStatus{DeploymentID: "x", Status: OverallStatus{State: "installed"}, Components: []ComponentStatus{{Name: "a", State: "failed"}}}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "deploymentId") || !strings.Contains(err.Error(), "most severe") {
		t.Errorf("Validate = %v", err)
	}
}
