package materialize

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/strvals"

	"github.com/berth-dev/berth/internal/errdef"
	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/margo/spec"
	"github.com/berth-dev/berth/state"
)

// Media types of a Compose Archive in OCI (Margo PR #200).
const (
	ComposeArtifactType = "application/vnd.org.margo.component.compose+json"
	ComposeLayerType    = "application/vnd.org.margo.component.compose.tar+gzip"
	// PlanFile is the plan in the revision folder.
	PlanFile = "margo-plan.json"
	// DefaultMaxArchiveSize caps a Compose Archive layer.
	DefaultMaxArchiveSize = 256 << 20
	maxPlanFile           = 16 << 20
)

// Error codes of the failures reported in Result.Failed (status error
// codes are implementation-defined, except the gateway's 101-103).
const (
	CodeWrongDevice = spec.CodeUnknownChild
	CodeAutonomous  = spec.CodeAutonomousNotSupported
	CodeUnsupported = "UNSUPPORTED_TYPE"
	CodeNotEligible = "NOT_ELIGIBLE"
	CodeRefused     = "CONTENT_REFUSED"
	CodeFetch       = "FETCH_FAILED"
	CodeParameters  = "INVALID_PARAMETERS"
	// CodeNoSpace: a download was not started, it would have left less
	// free disk space than minFreeSpace.
	CodeNoSpace = "INSUFFICIENT_STORAGE"
)

// Sentinel errors.
var (
	// ErrNotCompose reports an artifact that is not a Margo Compose
	// Archive.
	ErrNotCompose = errdef.Refusal("not a Margo Compose Archive")
	// ErrArchiveLayout reports an archive without exactly one top-level
	// folder holding compose.yaml, or with a link leaving that folder.
	ErrArchiveLayout = errdef.Refusal("invalid Compose Archive layout")
	// ErrTooLarge reports a layer over the size cap.
	ErrTooLarge = errdef.Refusal("too large")
	// ErrNotChart reports a Helm component whose artifact is not a Helm
	// chart.
	ErrNotChart = errdef.Refusal("not a Helm chart")
)

// HelmConfigMediaType is the config media type of a Helm chart in OCI.
const HelmConfigMediaType = "application/vnd.cncf.helm.config.v1+json"

// Options say what to materialize where.
type Options struct {
	// Dir is the revision folder to create; it must not exist. It is
	// created complete or not at all.
	Dir string
	// Source is the berth source name the revision belongs to.
	Source string
	// DeviceID is the device's Margo id.
	DeviceID string
	// Types are the profile types the device's appliers deploy (helm,
	// compose).
	Types []string
	// Capabilities are what the device reports, for device constraints.
	Capabilities *spec.Capabilities
	// Fetcher reaches the components.
	Fetcher Fetcher
	// ManifestVersion is the version of the manifest the deployments come
	// from.
	ManifestVersion uint64
	// Previous is the plan of the revision applied now and PreviousDir its
	// folder; nil for none.
	Previous    *Plan
	PreviousDir string
	// Limits cap an extracted Compose Archive; MaxArchiveSize its layer
	// (default DefaultMaxArchiveSize).
	Limits         archive.Limits
	MaxArchiveSize int64
	// Download makes the components' downloads (a Compose Archive's
	// layer, a Helm chart's) survive bad links and restarts, caps their
	// rate and checks the free disk space before each.
	Download Download
}

// Deployment is one verified deployment to materialize.
type Deployment struct {
	// Digest of its YAML.
	Digest     string
	Deployment *spec.Deployment
}

// Result is a materialized revision.
type Result struct {
	Revision state.Revision
	Plan     *Plan
	// Failed are the deployments that could not be materialized, by id.
	Failed map[string]Failure
}

// Failure says why a deployment was not materialized.
type Failure struct {
	Code string
	// Component is the failing component; empty when the whole
	// deployment failed (device, type, constraints).
	Component string
	Err       error
	// Carried is set when the previous revision's apps of the deployment
	// were kept.
	Carried bool
}

// Plan is what a Margo revision deploys.
type Plan struct {
	ManifestVersion uint64           `json:"manifestVersion"`
	Deployments     []PlanDeployment `json:"deployments"`
}

// PlanDeployment is one deployment of a plan.
type PlanDeployment struct {
	ID            string          `json:"id"`
	Digest        string          `json:"digest"`
	Name          string          `json:"name"`
	Namespace     string          `json:"namespace,omitempty"`
	ApplicationID string          `json:"applicationId"`
	Type          string          `json:"type"`
	Components    []PlanComponent `json:"components"`
	// Carried is set when the deployment's apps come from the previous
	// revision because this one could not materialize them.
	Carried bool `json:"carried,omitempty"`
}

// PlanComponent is one component: one app.
type PlanComponent struct {
	Name       string `json:"name"`
	App        string `json:"app"`
	Repository string `json:"repository"`
	Revision   string `json:"revision"`
	// Digest is the manifest digest the revision resolved to.
	Digest string `json:"digest"`
	// Path is the Compose project folder, or the Helm chart folder, in
	// the revision.
	Path    string            `json:"path,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Values  map[string]any    `json:"values,omitempty"`
	Wait    bool              `json:"wait"`
	Timeout time.Duration     `json:"timeout,omitempty"`
}

// Materialize builds the revision folder for deps (in manifest order).
func Materialize(ctx context.Context, deps []Deployment, o Options) (*Result, error) {
	if o.MaxArchiveSize <= 0 {
		o.MaxArchiveSize = DefaultMaxArchiveSize
	}
	m, err := newMaterializer(o)
	if err != nil {
		return nil, err
	}
	defer m.cleanup()
	plan := &Plan{ManifestVersion: o.ManifestVersion}
	failed := map[string]Failure{}
	for _, d := range deps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		m.created = nil
		pd, f := m.deployment(ctx, d)
		if f != nil {
			m.discard()
			if prev, found := m.previous(d.Deployment.ID); found {
				if err := m.carry(o.PreviousDir, prev); err != nil {
					return nil, err
				}
				prev.Carried = true
				f.Carried = true
				plan.Deployments = append(plan.Deployments, prev)
			}
			failed[d.Deployment.ID] = *f
			continue
		}
		plan.Deployments = append(plan.Deployments, *pd)
	}
	res, err := m.finish(plan)
	if err != nil {
		return nil, err
	}
	res.Failed = failed
	return res, nil
}

// Rollback builds, in o.Dir, the revision a failed apply switches to: the
// deployments of next (materialized in nextDir) with those in failed put
// back on what o.Previous had for them (carried, their files copied from
// o.PreviousDir), or left out when it had none; the others as they are in
// next. Nothing is fetched.
func Rollback(next *Plan, nextDir string, failed []string, o Options) (*Result, error) {
	m, err := newMaterializer(o)
	if err != nil {
		return nil, err
	}
	defer m.cleanup()
	plan := &Plan{ManifestVersion: next.ManifestVersion}
	for _, d := range next.Deployments {
		from := nextDir
		if slices.ContainsFunc(failed, func(id string) bool { return strings.EqualFold(id, d.ID) }) {
			prev, ok := m.previous(d.ID)
			if !ok {
				continue
			}
			d, from = prev, o.PreviousDir
			d.Carried = true
		}
		if err := m.carry(from, d); err != nil {
			return nil, err
		}
		plan.Deployments = append(plan.Deployments, d)
	}
	return m.finish(plan)
}

// newMaterializer starts a revision: a temporary folder beside o.Dir,
// which must not exist.
func newMaterializer(o Options) (*materializer, error) {
	if _, err := os.Lstat(o.Dir); err == nil {
		return nil, fmt.Errorf("materialize Margo revision: %s already exists", o.Dir)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(o.Dir), "."+filepath.Base(o.Dir)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("materialize Margo revision: %w", err)
	}
	return &materializer{o: o, tmp: tmp, names: map[string]bool{}}, nil
}

// cleanup removes the temporary folder unless finish renamed it.
func (m *materializer) cleanup() {
	if !m.done {
		os.RemoveAll(m.tmp)
	}
}

// finish writes the plan, syncs the folder and renames it to o.Dir.
func (m *materializer) finish(plan *Plan) (*Result, error) {
	raw, err := json.MarshalIndent(plan, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(m.tmp, PlanFile), raw, 0o644); err != nil {
		return nil, err
	}
	if err := syncTree(m.tmp); err != nil {
		return nil, err
	}
	if err := os.Chmod(m.tmp, 0o755); err != nil {
		return nil, err
	}
	if err := os.Rename(m.tmp, m.o.Dir); err != nil {
		return nil, fmt.Errorf("materialize Margo revision: %w", err)
	}
	m.done = true
	syncDir(filepath.Dir(m.o.Dir))
	return &Result{Revision: plan.Revision(m.o.Source, m.o.Dir, digestOf(raw)), Plan: plan}, nil
}

// Digest returns the revision digest of a plan folder: sha256 of its
// PlanFile.
func digestOf(raw []byte) string {
	s := sha256.Sum256(raw)
	return "sha256:" + hex.EncodeToString(s[:])
}

// LoadPlan reads the plan of a revision folder and returns it with the
// revision it describes.
func LoadPlan(source, dir string) (*Plan, state.Revision, error) {
	f, err := os.Open(filepath.Join(dir, PlanFile))
	if err != nil {
		return nil, state.Revision{}, fmt.Errorf("Margo revision %s: %w", dir, err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxPlanFile+1))
	if err != nil || len(raw) > maxPlanFile {
		return nil, state.Revision{}, fmt.Errorf("Margo revision %s: plan unreadable or too large: %v", dir, err)
	}
	var p Plan
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, state.Revision{}, fmt.Errorf("Margo revision %s: %w", dir, err)
	}
	return &p, p.Revision(source, dir, digestOf(raw)), nil
}

// Revision is the state.Revision of the plan in dir.
func (p *Plan) Revision(source, dir, digest string) state.Revision {
	return state.Revision{Source: source, Digest: digest, Dir: dir, State: p.DeviceState()}
}

// DeviceState is the desired state the appliers apply: one app per
// component, in install order.
func (p *Plan) DeviceState() *state.DeviceState {
	ds := &state.DeviceState{APIVersion: state.APIVersion, Kind: state.Kind, Apps: []state.App{}}
	for _, d := range p.Deployments {
		for _, c := range d.Components {
			app := state.App{Name: c.App}
			switch d.Type {
			case spec.TypeHelm:
				timeout := c.Timeout
				if timeout <= 0 {
					timeout = state.DefaultTimeout
				}
				app.Helm = &state.Helm{
					Namespace: d.Namespace, ReleaseName: c.App, Values: c.Values,
					Wait: c.Wait, Timeout: timeout, MaxHistory: state.DefaultMaxHistory,
				}
				if c.Path != "" {
					app.Helm.Path = c.Path // extracted into the revision
				} else {
					// A plan written before charts were extracted: the
					// applier pulls the chart by digest.
					app.Helm.Chart, app.Helm.Version, app.Helm.Digest = c.Repository, strings.ReplaceAll(c.Revision, "_", "+"), c.Digest
				}
			case spec.TypeCompose:
				app.Compose = &state.Compose{Path: c.Path, Files: []string{"compose.yaml"}, Env: maps.Clone(c.Env), Timeout: c.Timeout, NoWait: !c.Wait}
			}
			ds.Apps = append(ds.Apps, app)
		}
	}
	return ds
}

// Find returns the deployment and component of app name.
func (p *Plan) Find(app string) (*PlanDeployment, *PlanComponent, bool) {
	for i := range p.Deployments {
		for j := range p.Deployments[i].Components {
			if p.Deployments[i].Components[j].App == app {
				return &p.Deployments[i], &p.Deployments[i].Components[j], true
			}
		}
	}
	return nil, nil, false
}

type materializer struct {
	o     Options
	tmp   string
	names map[string]bool
	// created are the app folders written for the deployment at hand.
	created []string
	// done is set once the folder was renamed into place.
	done bool
}

// discard removes what a failed deployment wrote.
func (m *materializer) discard() {
	for _, d := range m.created {
		os.RemoveAll(d)
	}
	os.Remove(filepath.Join(m.tmp, "apps")) // only when empty
	m.created = nil
}

func (m *materializer) previous(id string) (PlanDeployment, bool) {
	if m.o.Previous == nil {
		return PlanDeployment{}, false
	}
	for _, d := range m.o.Previous.Deployments {
		if strings.EqualFold(d.ID, id) {
			return d, true
		}
	}
	return PlanDeployment{}, false
}

// deployment checks and materializes one deployment.
func (m *materializer) deployment(ctx context.Context, d Deployment) (*PlanDeployment, *Failure) {
	dep := d.Deployment
	switch {
	case strings.HasSuffix(dep.DeviceID, "/*"):
		return nil, &Failure{Code: CodeAutonomous, Err: fmt.Errorf("deployment %s asks for autonomous placement (%s), which this device does not support", dep.ID, dep.DeviceID)}
	case dep.DeviceID != "" && dep.DeviceID != m.o.DeviceID:
		return nil, &Failure{Code: CodeWrongDevice, Err: fmt.Errorf("deployment %s targets device %q, this device is %q", dep.ID, dep.DeviceID, m.o.DeviceID)}
	case !slices.Contains(m.o.Types, dep.Profile.Type):
		return nil, &Failure{Code: CodeUnsupported, Err: fmt.Errorf("deployment %s has a %s profile; this device deploys %s (configure the applier under apply:)", dep.ID, dep.Profile.Type, strings.Join(m.o.Types, " and "))}
	}
	if m.o.Capabilities != nil {
		if err := dep.Profile.Constraints.Eligible(m.o.Capabilities); err != nil {
			return nil, &Failure{Code: CodeNotEligible, Err: fmt.Errorf("deployment %s: %w", dep.ID, err)}
		}
	}
	if prev, ok := m.previous(dep.ID); ok && !prev.Carried && prev.Digest == d.Digest && m.o.PreviousDir != "" {
		// Unchanged since the previous revision: taken over as it is.
		if err := m.carry(m.o.PreviousDir, prev); err != nil {
			return nil, &Failure{Code: CodeFetch, Err: fmt.Errorf("deployment %s: %w", dep.ID, err)}
		}
		return &prev, nil
	}
	pd := &PlanDeployment{ID: dep.ID, Digest: d.Digest, Name: dep.Name, Namespace: dep.Namespace, ApplicationID: dep.ApplicationID, Type: dep.Profile.Type}
	for _, c := range dep.Profile.Components {
		pc := PlanComponent{Name: c.Name, App: m.appName(dep, c.Name), Repository: c.Repository, Revision: c.Revision, Wait: c.Wait, Timeout: c.Timeout}
		var err error
		if dep.Profile.Type == spec.TypeHelm {
			pc.Values, err = helmValues(dep, c.Name)
		} else {
			pc.Env, err = composeEnv(dep, c.Name)
		}
		if err != nil {
			return nil, &Failure{Code: CodeParameters, Component: c.Name, Err: fmt.Errorf("deployment %s component %s: %w", dep.ID, c.Name, err)}
		}
		repo := strings.TrimPrefix(c.Repository, "oci://")
		ref, err := m.o.Fetcher.Resolve(ctx, repo, c.Revision)
		if err != nil {
			return nil, failure(fmt.Errorf("deployment %s component %s: resolve %s:%s: %w", dep.ID, c.Name, repo, c.Revision, err), c.Name)
		}
		pc.Digest = ref.Digest
		v, err := m.o.Fetcher.Open(ctx, ref)
		if err == nil && dep.Profile.Type == spec.TypeHelm {
			pc.Path, err = m.helm(ctx, v, pc.App, repo, c.Revision)
		}
		if err == nil && dep.Profile.Type == spec.TypeCompose {
			pc.Path, err = m.compose(ctx, v, pc.App)
		}
		if err != nil {
			return nil, failure(fmt.Errorf("deployment %s component %s (%s@%s): %w", dep.ID, c.Name, repo, ref.Digest, err), c.Name)
		}
		pd.Components = append(pd.Components, pc)
	}
	return pd, nil
}

func failure(err error, component string) *Failure {
	code := CodeFetch
	switch {
	case errors.Is(err, errdef.ErrRefused):
		code = CodeRefused
	case errors.Is(err, deliver.ErrNoSpace):
		code = CodeNoSpace
	}
	return &Failure{Code: code, Component: component, Err: err}
}

// appName is <metadata.name>-<component>, a DNS label of at most 53
// characters (a Helm release name), shortened with a hash of the
// deployment id when too long or already taken.
func (m *materializer) appName(dep *spec.Deployment, component string) string {
	base := strings.ToLower(dep.Name + "-" + component)
	b := []byte(base)
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			b[i] = '-'
		}
	}
	name := strings.Trim(string(b), "-")
	if len(name) > 53 || m.names[name] || name == "" {
		h := sha256.Sum256([]byte(strings.ToLower(dep.ID) + "/" + component))
		name = strings.Trim(name[:min(len(name), 44)], "-") + "-" + hex.EncodeToString(h[:4])
	}
	m.names[name] = true
	return name
}

// helmValues sets the parameters aimed at component as values.
func helmValues(dep *spec.Deployment, component string) (map[string]any, error) {
	values := map[string]any{}
	for _, name := range slices.Sorted(maps.Keys(dep.Parameters)) {
		p := dep.Parameters[name]
		for _, t := range p.Targets {
			if !slices.Contains(t.Components, component) {
				continue
			}
			if err := setValue(values, t.Pointer, p.Value); err != nil {
				return nil, fmt.Errorf("parameter %s: %w", name, err)
			}
		}
	}
	if len(values) == 0 {
		return nil, nil
	}
	return values, nil
}

// setValue sets v at pointer: a JSON Pointer when it starts with "/",
// else a Helm value path (--set syntax).
func setValue(values map[string]any, pointer string, v any) error {
	if strings.HasPrefix(pointer, "/") {
		toks := strings.Split(pointer[1:], "/")
		cur := values
		for i, tok := range toks {
			tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
			if tok == "" {
				return fmt.Errorf("pointer %q has an empty segment", pointer)
			}
			if i == len(toks)-1 {
				cur[tok] = v
				return nil
			}
			next, ok := cur[tok].(map[string]any)
			if !ok {
				next = map[string]any{}
				cur[tok] = next
			}
			cur = next
		}
		return nil
	}
	if strings.ContainsAny(pointer, "=,") {
		return fmt.Errorf("value path %q must not contain '=' or ','", pointer)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := strvals.ParseJSON(pointer+"="+string(raw), values); err != nil {
		return fmt.Errorf("value path %q: %v", pointer, err)
	}
	return nil
}

// composeEnv is the environment the parameters aimed at component set.
func composeEnv(dep *spec.Deployment, component string) (map[string]string, error) {
	env := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(dep.Parameters)) {
		p := dep.Parameters[name]
		for _, t := range p.Targets {
			if !slices.Contains(t.Components, component) {
				continue
			}
			k, err := t.EnvName()
			if err != nil {
				return nil, fmt.Errorf("parameter %s: %w", name, err)
			}
			env[k] = envValue(p.Value)
		}
	}
	if len(env) == 0 {
		return nil, nil
	}
	return env, nil
}

func envValue(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}
