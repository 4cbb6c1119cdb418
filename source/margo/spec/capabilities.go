package spec

import (
	"fmt"
	"slices"
	"strings"
)

// Capabilities is the body of PUT /api/v1/capabilities/{deviceId} (rc.3
// DeviceCapabilitiesManifest: no apiVersion or kind).
type Capabilities struct {
	Properties CapabilityProperties `json:"properties"`
	// Labels are the device's labels, used by label selectors.
	Labels map[string]string `json:"labels,omitempty"`
}

// CapabilityProperties describe the resources delegated to Margo. The
// rc.3 names are used: cpus (not cpu), quantities without a space.
type CapabilityProperties struct {
	ID           string `json:"id"`
	Vendor       string `json:"vendor"`
	ModelNumber  string `json:"modelNumber"`
	SerialNumber string `json:"serialNumber"`
	CPUs         []CPU  `json:"cpus,omitempty"`
	Memory       string `json:"memory,omitempty"`
	Storage      string `json:"storage,omitempty"`
	// Peripherals and Interfaces are sent even when empty by a device
	// hosting workloads.
	Peripherals []Peripheral `json:"peripherals"`
	Interfaces  []Interface  `json:"interfaces"`
	// OtelCollector says whether an OpenTelemetry collector runs on the
	// device for workloads; always sent.
	OtelCollector            bool     `json:"otelCollector"`
	SupportedRuntimes        []string `json:"supportedRuntimes"`
	SupportedDeploymentTypes []string `json:"supportedDeploymentTypes"`
}

// CPU is one CPU of the device.
type CPU struct {
	Cores        int    `json:"cores"`
	Architecture string `json:"architecture,omitempty"`
}

// Peripheral is one peripheral delegated to Margo.
type Peripheral struct {
	Type         string `json:"type"`
	Manufacturer string `json:"manufacturer,omitempty"`
	Model        string `json:"model,omitempty"`
}

// Interface is one communication interface.
type Interface struct {
	Type string `json:"type"`
}

// Enums of the capabilities.
var (
	Architectures   = []string{"amd64", "arm64", "arm"}
	PeripheralTypes = []string{"gpu", "display", "camera", "microphone", "speaker"}
	InterfaceTypes  = []string{"ethernet", "wifi", "cellular", "bluetooth", "usb", "canbus", "rs232"}
	Runtimes        = []string{"oci", "custom"}
	DeploymentTypes = []string{"helm", "compose", "custom"}
)

// Validate checks c as a workload-hosting device must send it: the
// required identity fields, at least one CPU, memory, storage, runtime and
// deployment type, and every enum.
func (c *Capabilities) Validate() error {
	p := &problems{}
	pr := c.Properties
	for _, f := range []struct{ name, v string }{{"id", pr.ID}, {"vendor", pr.Vendor}, {"modelNumber", pr.ModelNumber}, {"serialNumber", pr.SerialNumber}} {
		if f.v == "" {
			p.add(join("properties", f.name), "is required")
		}
	}
	if pr.ID != "" && !ValidDeviceID(pr.ID) {
		p.add("properties.id", "invalid device id %q", pr.ID)
	}
	if len(pr.CPUs) == 0 {
		p.add("properties.cpus", "needs at least one CPU")
	}
	for i, cpu := range pr.CPUs {
		if cpu.Cores < 1 {
			p.add(index("properties.cpus", i)+".cores", "must be at least 1")
		}
		if cpu.Architecture != "" && !slices.Contains(Architectures, cpu.Architecture) {
			p.add(index("properties.cpus", i)+".architecture", "must be one of %s", strings.Join(Architectures, ", "))
		}
	}
	if _, err := ParseQuantity(pr.Memory, false); err != nil {
		p.add("properties.memory", "%v", err)
	}
	if _, err := ParseQuantity(pr.Storage, true); err != nil {
		p.add("properties.storage", "%v", err)
	}
	enum := func(path string, list []string, allowed []string, atLeastOne bool) {
		if atLeastOne && len(list) == 0 {
			p.add(path, "needs at least one of %s", strings.Join(allowed, ", "))
		}
		for i, v := range list {
			if !slices.Contains(allowed, v) {
				p.add(index(path, i), "must be one of %s, got %q", strings.Join(allowed, ", "), v)
			}
		}
	}
	enum("properties.supportedRuntimes", pr.SupportedRuntimes, Runtimes, true)
	enum("properties.supportedDeploymentTypes", pr.SupportedDeploymentTypes, DeploymentTypes, true)
	for i, per := range pr.Peripherals {
		enum(index("properties.peripherals", i)+".type", []string{per.Type}, PeripheralTypes, false)
	}
	for i, in := range pr.Interfaces {
		enum(index("properties.interfaces", i)+".type", []string{in.Type}, InterfaceTypes, false)
	}
	if pr.Peripherals == nil || pr.Interfaces == nil {
		p.add("properties", "peripherals and interfaces must be lists (empty when there are none)")
	}
	if p.failed() {
		return p.err(ErrInvalidBody, fmt.Sprintf("capabilities of %s", pr.ID))
	}
	return nil
}
