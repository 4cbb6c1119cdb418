package spec

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/internal/yamlstrict"
)

// MaxDeploymentSize caps one ApplicationDeployment YAML.
const MaxDeploymentSize = 1 << 20

// Profile types.
const (
	TypeHelm    = "helm"
	TypeCompose = "compose"
)

// Envelopes of an ApplicationDeployment (NOTES §2.1).
const (
	// EnvelopeCurrent is the rc.3 shape: no apiVersion/kind, top-level id,
	// spec.applicationId.
	EnvelopeCurrent = "current"
	// EnvelopeLegacy has apiVersion application.margo.org/v1alpha1 and
	// kind ApplicationDeployment; ids may be in metadata.annotations.
	EnvelopeLegacy = "v1alpha1"
	// LegacyAPIVersion and LegacyKind are the header of EnvelopeLegacy.
	LegacyAPIVersion = "application.margo.org/v1alpha1"
	LegacyKind       = "ApplicationDeployment"
)

// Deployment is a parsed ApplicationDeployment, whatever its envelope.
type Deployment struct {
	// ID is the deployment id (top-level id, or metadata.annotations.id).
	ID string
	// ApplicationID is spec.applicationId, or
	// metadata.annotations.applicationId.
	ApplicationID string
	// Envelope is EnvelopeCurrent or EnvelopeLegacy.
	Envelope string
	// Name is metadata.name: the name of the Kubernetes objects.
	Name string
	// Namespace is metadata.namespace; may be empty in the legacy envelope.
	Namespace string
	// DeviceID is metadata.deviceId; empty when the document has none
	// (older envelopes): the client's own device.
	DeviceID string
	// Labels and Annotations are metadata.labels and .annotations.
	Labels      map[string]string
	Annotations map[string]string
	// Profile is spec.deploymentProfile.
	Profile Profile
	// Parameters are spec.parameters by name.
	Parameters map[string]Parameter
}

// Profile is a deployment profile.
type Profile struct {
	// Type is TypeHelm or TypeCompose (helm.v3 is read as helm).
	Type string
	// Components are in install order; at least one.
	Components []Component
	// Constraints are the device constraints; nil when none.
	Constraints *DeviceConstraints
}

// Component is one component of a profile: a Helm chart or a Compose
// Archive in an OCI repository.
type Component struct {
	// Name is unique in the profile: lowercase letters, digits and '-'.
	Name string
	// Repository is the oci:// URL of the repository, without tag.
	Repository string
	// Revision is the OCI tag, as written (a SemVer 2.0 version with '_'
	// for '+').
	Revision string
	// Wait for this component before the next; default true.
	Wait bool
	// Timeout of the install; 0 when not given.
	Timeout time.Duration
}

// Version is the revision as a SemVer version ('_' back to '+').
func (c Component) Version() string { return strings.ReplaceAll(c.Revision, "_", "+") }

// Reference is repository:revision, without oci://.
func (c Component) Reference() string {
	return strings.TrimPrefix(c.Repository, "oci://") + ":" + c.Revision
}

// Parameter is one user-supplied value and where it goes.
type Parameter struct {
	// Value is a string, an int64, a float64 or a bool.
	Value any
	// Targets are where the value is set.
	Targets []Target
}

// Target is a place a parameter is set: Pointer is a Helm value path
// (--set syntax, such as settings.limits.cpu) for Helm components, an
// environment variable name (an "ENV." prefix is accepted and dropped) for
// Compose components.
type Target struct {
	Pointer    string
	Components []string
}

var (
	componentRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	appIDRE     = regexp.MustCompile(`^[-a-z0-9]{1,200}$`)
	deviceIDRE  = regexp.MustCompile(`^[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*(/\*)?$`)
	timeoutRE   = regexp.MustCompile(`^(\d+)m(\d+)s$`)
	// nameRE is a Kubernetes object name (DNS subdomain).
	nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	// namespaceRE is a Kubernetes namespace (DNS label).
	namespaceRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	// repoRE is an oci:// repository: a host, optional port, a lowercase
	// path.
	repoRE = regexp.MustCompile(`^oci://(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)+$`)
	// envNameRE is an environment variable name.
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	tagRE     = regexp.MustCompile(`^[\w][\w.-]{0,127}$`)
)

// ValidDeviceID reports whether id has the form of a Margo device id.
func ValidDeviceID(id string) bool { return len(id) <= 512 && deviceIDRE.MatchString(id) }

// ParseDeployment parses and validates an ApplicationDeployment YAML (at
// most MaxDeploymentSize bytes). name names the document in errors (such
// as its deployment id). Both envelopes are accepted (see Deployment);
// unknown fields are errors except x-<name>-extensions keys on spec,
// deploymentProfile and components, which are ignored. Legacy Compose
// components (packageLocation, keyLocation) are refused: the device pulls
// Compose Archives from OCI registries only.
func ParseDeployment(name string, data []byte) (*Deployment, error) {
	if len(data) > MaxDeploymentSize {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes", name, ErrInvalidDeployment, MaxDeploymentSize)
	}
	p := &dparser{Parser: yamlstrict.Parser{File: name}}
	root := p.Document(data, "an ApplicationDeployment needs id, metadata and spec", "an ApplicationDeployment")
	var d *Deployment
	if root != nil {
		d = p.deployment(root)
	}
	if p.Failed() {
		return nil, &deploymentError{err: p.Err()}
	}
	return d, nil
}

// deploymentError joins the located problems under ErrInvalidDeployment.
type deploymentError struct{ err error }

func (e *deploymentError) Error() string { return e.err.Error() }
func (e *deploymentError) Unwrap() []error {
	return []error{ErrInvalidDeployment, e.err}
}

type dparser struct {
	yamlstrict.Parser
}

type fields = map[string]yamlstrict.Field

// mapping is yamlstrict's Mapping that also accepts extension keys when
// ext is set.
func (p *dparser) mapping(n *yaml.Node, path string, ext bool, known ...string) fields {
	if ext && n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i]; k.Kind == yaml.ScalarNode && IsExtensionKey(k.Value) {
				known = append(known, k.Value)
			}
		}
	}
	return p.Mapping(n, path, known...)
}

// str returns the string field name of f; a missing required one is
// recorded at n.
func (p *dparser) str(n *yaml.Node, f fields, path, name string, required bool) (*yaml.Node, string, bool) {
	if _, ok := f[name]; !ok {
		if required {
			p.Missing(n, n, path, name, "")
		}
		return nil, "", false
	}
	return p.StrField(f, path, name)
}

func (p *dparser) deployment(root *yaml.Node) *Deployment {
	f := p.mapping(root, "", false, "apiVersion", "kind", "id", "metadata", "spec")
	if f == nil {
		return nil
	}
	d := &Deployment{Envelope: EnvelopeCurrent}
	_, hasAV := f["apiVersion"]
	_, hasKind := f["kind"]
	if hasAV || hasKind {
		d.Envelope = EnvelopeLegacy
		if n, s, ok := p.str(root, f, "", "apiVersion", true); ok && s != LegacyAPIVersion {
			p.Errorf(n, "apiVersion", "must be %q (or absent, as in rc.3), got %q", LegacyAPIVersion, s)
		}
		if n, s, ok := p.str(root, f, "", "kind", true); ok && s != LegacyKind {
			p.Errorf(n, "kind", "must be %q (or absent, as in rc.3), got %q", LegacyKind, s)
		}
	}
	idNode, id, hasID := p.str(root, f, "", "id", false)
	if mf, ok := f["metadata"]; ok {
		p.metadata(mf.Val, d)
	} else {
		p.Missing(root, root, "", "metadata", "")
	}
	switch annID := d.Annotations["id"]; {
	case hasID && annID != "" && annID != id:
		p.Errorf(idNode, "id", "%q differs from metadata.annotations.id %q", id, annID)
	case hasID:
		d.ID = id
	case annID != "":
		d.ID = annID
		idNode = root
	default:
		if _, set := f["id"]; !set {
			p.Missing(root, root, "", "id", " (the deployment id, a UUID)")
		}
	}
	if d.ID != "" && !uuidRE.MatchString(d.ID) {
		p.Errorf(idNode, "id", "must be a UUID, got %q", truncate(d.ID))
	}
	if sf, ok := f["spec"]; ok {
		p.spec(sf.Val, d)
	} else {
		p.Missing(root, root, "", "spec", "")
	}
	if d.ApplicationID == "" && !p.Failed() {
		p.Errorf(root, "spec", "missing required field %q", "applicationId")
	}
	return d
}

func (p *dparser) metadata(n *yaml.Node, d *Deployment) {
	f := p.mapping(n, "metadata", false, "name", "namespace", "deviceId", "labels", "annotations")
	if f == nil {
		return
	}
	if vn, s, ok := p.str(n, f, "metadata", "name", true); ok {
		if len(s) > 253 || !nameRE.MatchString(s) {
			p.Errorf(vn, "metadata.name", "must be a Kubernetes object name (lowercase letters, digits, '-' and '.'), got %q", truncate(s))
		}
		d.Name = s
	}
	if vn, s, ok := p.str(n, f, "metadata", "namespace", d.Envelope == EnvelopeCurrent); ok {
		if len(s) > 63 || !namespaceRE.MatchString(s) {
			p.Errorf(vn, "metadata.namespace", "must be a Kubernetes namespace (at most 63 lowercase letters, digits and '-'), got %q", truncate(s))
		}
		d.Namespace = s
	}
	if vn, s, ok := p.str(n, f, "metadata", "deviceId", false); ok {
		if !ValidDeviceID(s) {
			p.Errorf(vn, "metadata.deviceId", "must be a device id such as press-42 or gw/press-42, got %q", truncate(s))
		}
		d.DeviceID = s
	}
	d.Labels = p.stringMap(f, "metadata", "labels")
	d.Annotations = p.stringMap(f, "metadata", "annotations")
	if a := d.Annotations["applicationId"]; a != "" {
		d.ApplicationID = a
	}
}

// stringMap parses a map of strings.
func (p *dparser) stringMap(f fields, path, name string) map[string]string {
	fv, ok := f[name]
	if !ok || yamlstrict.IsNull(fv.Val) || !p.Kind(fv.Val, join(path, name), yaml.MappingNode) {
		return nil
	}
	out := map[string]string{}
	p.Keys(fv.Val, join(path, name), func(k, v *yaml.Node) {
		if s, ok := p.Str(v, join(join(path, name), k.Value)); ok {
			out[k.Value] = s
		}
	})
	return out
}

func (p *dparser) spec(n *yaml.Node, d *Deployment) {
	f := p.mapping(n, "spec", true, "applicationId", "deploymentProfile", "parameters")
	if f == nil {
		return
	}
	if vn, s, ok := p.str(n, f, "spec", "applicationId", d.ApplicationID == ""); ok {
		if !appIDRE.MatchString(s) {
			p.Errorf(vn, "spec.applicationId", "must be 1 to 200 lowercase letters, digits and '-', got %q", truncate(s))
		}
		if a := d.Annotations["applicationId"]; a != "" && a != s {
			p.Errorf(vn, "spec.applicationId", "%q differs from metadata.annotations.applicationId %q", s, a)
		}
		d.ApplicationID = s
	}
	if pf, ok := f["deploymentProfile"]; ok {
		p.profile(pf.Val, &d.Profile)
	} else {
		p.Missing(n, n, "spec", "deploymentProfile", "")
	}
	if pf, ok := f["parameters"]; ok && !yamlstrict.IsNull(pf.Val) {
		d.Parameters = p.parameters(pf.Val, d.Profile)
	}
}

func (p *dparser) profile(n *yaml.Node, pr *Profile) {
	const path = "spec.deploymentProfile"
	f := p.mapping(n, path, true, "type", "components", "deviceConstraints")
	if f == nil {
		return
	}
	if vn, s, ok := p.str(n, f, path, "type", true); ok {
		switch s {
		case TypeHelm, "helm.v3":
			pr.Type = TypeHelm
		case TypeCompose:
			pr.Type = TypeCompose
		default:
			p.Errorf(vn, join(path, "type"), "must be helm or compose, got %q", truncate(s))
		}
	}
	if _, ok := f["components"]; !ok {
		p.Missing(n, n, path, "components", "")
	}
	names := map[string]int{}
	for i, cn := range p.ListField(f, path, "components") {
		cpath := index(join(path, "components"), i)
		c := p.component(cn, cpath)
		if c == nil {
			continue
		}
		if first, dup := names[c.Name]; dup && c.Name != "" {
			p.Errorf(cn, join(cpath, "name"), "duplicate component name %q (first at line %d)", c.Name, first)
		}
		names[c.Name] = cn.Line
		pr.Components = append(pr.Components, *c)
	}
	// An empty list, or no list at all ("components:" alone is null).
	if cv, ok := f["components"]; ok && (yamlstrict.IsNull(cv.Val) || cv.Val.Kind == yaml.SequenceNode && len(cv.Val.Content) == 0) {
		p.Errorf(cv.Val, join(path, "components"), "needs at least one component")
	}
	if cf, ok := f["deviceConstraints"]; ok && !yamlstrict.IsNull(cf.Val) {
		pr.Constraints = p.constraints(cf.Val, join(path, "deviceConstraints"))
	}
}

func (p *dparser) component(n *yaml.Node, path string) *Component {
	f := p.mapping(n, path, true, "name", "properties")
	if f == nil {
		return nil
	}
	c := &Component{Wait: true}
	if vn, s, ok := p.str(n, f, path, "name", true); ok {
		if len(s) > 63 || !componentRE.MatchString(s) {
			p.Errorf(vn, join(path, "name"), "must be at most 63 lowercase letters, digits and '-', got %q", truncate(s))
		}
		c.Name = s
	}
	pf, ok := f["properties"]
	if !ok {
		p.Missing(n, n, path, "properties", " (repository and revision)")
		return c
	}
	ppath := join(path, "properties")
	if pf.Val.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(pf.Val.Content); i += 2 {
			if k := pf.Val.Content[i]; k.Value == "packageLocation" || k.Value == "keyLocation" {
				p.Errorf(k, ppath, "%s is the pre-rc.3 Compose package form, not supported: the WFM must send repository and revision (a Compose Archive in an OCI registry)", k.Value)
				return c
			}
		}
	}
	pp := p.mapping(pf.Val, ppath, true, "repository", "revision", "wait", "timeout")
	if pp == nil {
		return c
	}
	if vn, s, ok := p.str(pf.Val, pp, ppath, "repository", true); ok {
		if len(s) > 255+6 || !repoRE.MatchString(s) {
			p.Errorf(vn, join(ppath, "repository"), "must be an oci:// repository without tag, such as oci://registry.local:5000/acme/collector, got %q", truncate(s))
		}
		c.Repository = s
	}
	if vn, s, ok := p.str(pf.Val, pp, ppath, "revision", true); ok {
		v := strings.ReplaceAll(s, "_", "+")
		if _, err := semver.StrictNewVersion(v); err != nil || strings.Contains(s, "+") || !tagRE.MatchString(s) {
			p.Errorf(vn, join(ppath, "revision"), "must be a SemVer 2.0 version without a leading v, with _ for +, such as 1.4.0 or 1.4.0_build.7, got %q", truncate(s))
		}
		c.Revision = s
	}
	if wv, ok := pp["wait"]; ok {
		if b, ok := p.Bool(wv.Val, join(ppath, "wait")); ok {
			c.Wait = b
		}
	}
	if vn, s, ok := p.str(pf.Val, pp, ppath, "timeout", false); ok {
		m := timeoutRE.FindStringSubmatch(s)
		d, err := time.ParseDuration(s)
		if m == nil || err != nil || d <= 0 {
			p.Errorf(vn, join(ppath, "timeout"), "must be minutes and seconds such as 8m30s, got %q", truncate(s))
		} else {
			c.Timeout = d
		}
	}
	return c
}

func (p *dparser) parameters(n *yaml.Node, pr Profile) map[string]Parameter {
	const path = "spec.parameters"
	if !p.Kind(n, path, yaml.MappingNode) {
		return nil
	}
	comps := map[string]bool{}
	for _, c := range pr.Components {
		comps[c.Name] = true
	}
	out := map[string]Parameter{}
	p.Keys(n, path, func(k, v *yaml.Node) {
		ppath := join(path, k.Value)
		f := p.mapping(v, ppath, false, "value", "targets")
		if f == nil {
			return
		}
		par := Parameter{}
		if vf, ok := f["value"]; !ok {
			p.Missing(v, v, ppath, "value", "")
		} else {
			par.Value = p.scalar(vf.Val, join(ppath, "value"))
		}
		if _, ok := f["targets"]; !ok {
			p.Missing(v, v, ppath, "targets", "")
		}
		for i, tn := range p.ListField(f, ppath, "targets") {
			tpath := index(join(ppath, "targets"), i)
			tf := p.mapping(tn, tpath, false, "pointer", "components")
			if tf == nil {
				continue
			}
			t := Target{}
			if vn, s, ok := p.str(tn, tf, tpath, "pointer", true); ok {
				if s == "" || len(s) > 1024 {
					p.Errorf(vn, join(tpath, "pointer"), "must be a value path or variable name, got %q", truncate(s))
				}
				t.Pointer = s
			}
			if cf, ok := tf["components"]; ok {
				t.Components = p.Strings(cf.Val, join(tpath, "components"), func(cn *yaml.Node, cp, s string) {
					if !comps[s] {
						p.Errorf(cn, cp, "no component %q in the deployment profile", truncate(s))
					}
				})
			} else {
				p.Missing(tn, tn, tpath, "components", "")
			}
			par.Targets = append(par.Targets, t)
		}
		out[k.Value] = par
	})
	return out
}

// scalar decodes a parameter value: a string, integer, number or boolean.
func (p *dparser) scalar(n *yaml.Node, path string) any {
	if n.Kind != yaml.ScalarNode {
		p.Errorf(n, path, "must be a string, number or boolean, got %s", yamlstrict.Describe(n))
		return nil
	}
	switch n.ShortTag() {
	case "!!str":
		return n.Value
	case "!!bool":
		b, _ := p.Bool(n, path)
		return b
	case "!!int":
		if i, ok := p.Int(n, path); ok {
			return i
		}
	case "!!float":
		if f, ok := p.Float(n, path); ok {
			return f
		}
	default:
		p.Errorf(n, path, "must be a string, number or boolean, got %s", yamlstrict.Describe(n))
	}
	return nil
}

// EnvName returns the environment variable a Compose target sets: the
// pointer without an optional "ENV." prefix, or an error when it is not a
// variable name.
func (t Target) EnvName() (string, error) {
	name := strings.TrimPrefix(t.Pointer, "ENV.")
	if !envNameRE.MatchString(name) {
		return "", fmt.Errorf("parameter target %q is not an environment variable name (letters, digits and _)", t.Pointer)
	}
	return name, nil
}
