package spec

import (
	"fmt"
	"slices"
)

// Deployment and component states.
const (
	StatePending    = "pending"
	StateInstalling = "installing"
	StateInstalled  = "installed"
	StateRemoving   = "removing"
	StateRemoved    = "removed"
	StateFailed     = "failed"
)

// States in increasing severity: the overall state of a deployment is its
// most severe component state. The spec's precedence is failed > removing
// > installing > pending > installed; it omits removed, which is taken as
// the least severe (a deployment is removed only when all its components
// are).
var States = []string{StateRemoved, StateInstalled, StatePending, StateInstalling, StateRemoving, StateFailed}

// Reserved error codes of a see-thru gateway.
const (
	CodeUnknownChild            = "101"
	CodeChildUnreachable        = "102"
	CodeAutonomousNotSupported  = "103"
	maxStatusMessage            = 4096
	maxStatusComponents         = 1024
	defaultOverallStateNoComp   = StatePending
	statusComponentsRequiredMsg = "needs one entry per component"
)

// DeploymentStatus is the body of POST /api/v1/deployments/{id}/status
// (rc.3 DeploymentStatusManifest: no apiVersion or kind).
type DeploymentStatus struct {
	DeploymentID string `json:"deploymentId"`
	// DeviceID is the device the deployment runs on.
	DeviceID string `json:"deviceId,omitempty"`
	// AdoptedManifestVersion is the manifestVersion of the manifest the
	// deployment's current revision was taken from.
	AdoptedManifestVersion uint64            `json:"adoptedManifestVersion"`
	Status                 OverallStatus     `json:"status"`
	Components             []ComponentStatus `json:"components"`
}

// OverallStatus is the state of the whole deployment.
type OverallStatus struct {
	State string       `json:"state"`
	Error *StatusError `json:"error,omitempty"`
}

// ComponentStatus is the state of one component.
type ComponentStatus struct {
	Name  string       `json:"name"`
	State string       `json:"state"`
	Error *StatusError `json:"error,omitempty"`
}

// StatusError says what failed: Code is implementation-defined (or a
// gateway code), Source the deployment's metadata.name or the component
// name.
type StatusError struct {
	Code    string `json:"code"`
	Source  string `json:"source"`
	Message string `json:"message"`
}

// Severity returns the rank of state in States, -1 when unknown.
func Severity(state string) int { return slices.Index(States, state) }

// Overall returns the most severe of the component states; pending when
// there is none.
func Overall(components []ComponentStatus) string {
	out := ""
	for _, c := range components {
		if out == "" || Severity(c.State) > Severity(out) {
			out = c.State
		}
	}
	if out == "" {
		return defaultOverallStateNoComp
	}
	return out
}

// NewStatus builds the status of a deployment from its component states:
// the overall state is the most severe, its error the first error of a
// component in that state, with source name (the deployment's
// metadata.name). Messages are cut to 4 KiB.
func NewStatus(deploymentID, deviceID, name string, adopted uint64, components []ComponentStatus) DeploymentStatus {
	cs := slices.Clone(components)
	for i := range cs {
		if e := cs[i].Error; e != nil {
			c := *e
			c.Message = cutMessage(c.Message)
			cs[i].Error = &c
		}
	}
	st := DeploymentStatus{
		DeploymentID:           deploymentID,
		DeviceID:               deviceID,
		AdoptedManifestVersion: adopted,
		Status:                 OverallStatus{State: Overall(cs)},
		Components:             cs,
	}
	for _, c := range cs {
		if c.State == st.Status.State && c.Error != nil {
			st.Status.Error = &StatusError{Code: c.Error.Code, Source: name, Message: c.Error.Message}
			break
		}
	}
	return st
}

func cutMessage(s string) string {
	if len(s) > maxStatusMessage {
		return s[:maxStatusMessage] + "…"
	}
	return s
}

// Validate checks a status before it is sent.
func (s *DeploymentStatus) Validate() error {
	p := &problems{}
	if !uuidRE.MatchString(s.DeploymentID) {
		p.add("deploymentId", "must be a UUID, got %q", truncate(s.DeploymentID))
	}
	if s.DeviceID != "" && !ValidDeviceID(s.DeviceID) {
		p.add("deviceId", "invalid device id %q", truncate(s.DeviceID))
	}
	if Severity(s.Status.State) < 0 {
		p.add("status.state", "unknown state %q", s.Status.State)
	}
	if len(s.Components) == 0 || len(s.Components) > maxStatusComponents {
		p.add("components", statusComponentsRequiredMsg)
	}
	names := map[string]bool{}
	for i, c := range s.Components {
		path := index("components", i)
		if c.Name == "" || names[c.Name] {
			p.add(join(path, "name"), "missing or duplicate component name %q", c.Name)
		}
		names[c.Name] = true
		if Severity(c.State) < 0 {
			p.add(join(path, "state"), "unknown state %q", c.State)
		}
	}
	if len(s.Components) > 0 && s.Status.State != Overall(s.Components) {
		p.add("status.state", "is %q, but the most severe component state is %q", s.Status.State, Overall(s.Components))
	}
	if p.failed() {
		return p.err(ErrInvalidBody, fmt.Sprintf("status of deployment %s", s.DeploymentID))
	}
	return nil
}
