package margo

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/source/margo/spec"
)

// DeviceInfo is what the operator says about the device; Discover fills in
// the rest from the system.
type DeviceInfo struct {
	// ID is the device id.
	ID string
	// Vendor, ModelNumber and SerialNumber; empty: read from DMI
	// (/sys/class/dmi/id), else "unknown".
	Vendor, ModelNumber, SerialNumber string
	// Labels are the device's labels.
	Labels map[string]string
	// Interfaces are interface types; nil: the physical network
	// interfaces found (ethernet, wifi).
	Interfaces []string
	// Peripherals delegated to Margo workloads.
	Peripherals []spec.Peripheral
	// OtelCollector says an OpenTelemetry collector is offered to
	// workloads.
	OtelCollector bool
	// DeploymentTypes are those of the appliers configured (helm,
	// compose).
	DeploymentTypes []string
	// StoragePath is the file system whose size is reported as storage
	// (where workloads store data, such as /var/lib/docker). Default /.
	StoragePath string
	// SysRoot prefixes /proc and /sys (tests). Default "".
	SysRoot string
}

// Discover builds the device's capabilities: CPU cores and architecture,
// memory (/proc/meminfo), storage (the size of StoragePath's file system),
// runtime oci, the deployment types given, interfaces, peripherals and
// labels.
func Discover(info DeviceInfo) (*spec.Capabilities, error) {
	root := info.SysRoot
	dmi := func(name, fallback string) string {
		if fallback != "" {
			return fallback
		}
		b, err := os.ReadFile(filepath.Join(root, "/sys/class/dmi/id", name))
		if s := strings.TrimSpace(string(b)); err == nil && s != "" {
			return s
		}
		return "unknown"
	}
	mem, err := memTotal(filepath.Join(root, "/proc/meminfo"))
	if err != nil {
		return nil, fmt.Errorf("device capabilities: %w", err)
	}
	sp := info.StoragePath
	if sp == "" {
		sp = "/"
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(sp, &fs); err != nil {
		return nil, fmt.Errorf("device capabilities: storage of %s: %w", sp, err)
	}
	storage := int64(fs.Blocks) * int64(fs.Bsize)
	ifaces := info.Interfaces
	if ifaces == nil {
		ifaces = netInterfaces(filepath.Join(root, "/sys/class/net"))
	}
	c := &spec.Capabilities{
		Properties: spec.CapabilityProperties{
			ID:                       info.ID,
			Vendor:                   dmi("sys_vendor", info.Vendor),
			ModelNumber:              dmi("product_name", info.ModelNumber),
			SerialNumber:             dmi("product_serial", info.SerialNumber),
			CPUs:                     []spec.CPU{{Cores: runtime.NumCPU(), Architecture: arch(runtime.GOARCH)}},
			Memory:                   quantity(mem, false),
			Storage:                  quantity(storage, true),
			Peripherals:              slices.Clone(info.Peripherals),
			OtelCollector:            info.OtelCollector,
			SupportedRuntimes:        []string{"oci"},
			SupportedDeploymentTypes: slices.Clone(info.DeploymentTypes),
			Interfaces:               []spec.Interface{},
		},
		Labels: info.Labels,
	}
	if c.Properties.Peripherals == nil {
		c.Properties.Peripherals = []spec.Peripheral{}
	}
	for _, t := range ifaces {
		c.Properties.Interfaces = append(c.Properties.Interfaces, spec.Interface{Type: t})
	}
	return c, c.Validate()
}

// arch maps GOARCH to the capabilities' enum; other architectures are not
// in it and are left out.
func arch(goarch string) string {
	if slices.Contains(spec.Architectures, goarch) {
		return goarch
	}
	return ""
}

// memTotal reads MemTotal from a meminfo file, in bytes.
func memTotal(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %v", path, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("%s has no MemTotal", path)
}

// quantity writes bytes in the largest whole unit of the spec's forms
// (rounding down), such as 7Gi.
func quantity(b int64, storage bool) string {
	units := []string{"Ki", "Mi", "Gi"}
	if storage {
		units = append(units, "Ti", "Pi", "Ei")
	}
	n, unit := b>>10, "Ki"
	for i := len(units) - 1; i >= 0; i-- {
		shift := uint(10 * (i + 1))
		if v := b >> shift; v >= 16 || i == 0 {
			n, unit = v, units[i]
			break
		}
	}
	return strconv.FormatInt(n, 10) + unit
}

// netInterfaces lists the types of the physical network interfaces: wifi
// for those with a wireless folder, ethernet for the other ARPHRD_ETHER
// ones with a device; each type once.
func netInterfaces(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return []string{}
	}
	out := []string{}
	add := func(t string) {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(p, "device")); err != nil {
			continue // virtual
		}
		if _, err := os.Stat(filepath.Join(p, "wireless")); err == nil {
			add("wifi")
			continue
		}
		if b, err := os.ReadFile(filepath.Join(p, "type")); err == nil && strings.TrimSpace(string(b)) == "1" {
			add("ethernet")
		}
	}
	return out
}
