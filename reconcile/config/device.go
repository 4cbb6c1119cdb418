package config

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"

	"github.com/berth-dev/berth/policy/rollout"
	"github.com/berth-dev/berth/policy/window"
)

// DefaultMachineIDFile is the file the default device id derives from.
const DefaultMachineIDFile = "/etc/machine-id"

// appID is berth's systemd application id: the default device id is the
// machine id made specific to it, as sd_id128_get_machine_app_specific(3)
// does, so that the raw machine id (which systemd asks to keep
// confidential) is never published: `systemd-id128 machine-id
// --app-specific=2c41e9608f9f43d0a7896161b069fa46` prints the same id.
var appID = [16]byte{0x2c, 0x41, 0xe9, 0x60, 0x8f, 0x9f, 0x43, 0xd0, 0xa7, 0x89, 0x61, 0x61, 0xb0, 0x69, 0xfa, 0x46}

// ErrNoDeviceID means the device has no stable id: device.id is not set
// and the machine id file is missing, empty or uninitialized. The agent
// refuses to start without one, since rollouts place devices by id.
var ErrNoDeviceID = errors.New("no stable device id")

// Device is who the device is, for staged rollouts and fleet status.
type Device struct {
	// ID is device.id; empty: derived from IDFile (see Identity).
	ID string
	// IDFile is the machine id file the id derives from when ID is empty.
	// Default DefaultMachineIDFile.
	IDFile string
	// Labels are matched against the selectors of rollout waves; keys and
	// values are checked like Kubernetes labels.
	Labels map[string]string
}

// Windows say when a source may switch and apply, and download.
type Windows struct {
	// Apply: switch to a new revision and apply it only inside one of
	// these windows; nil: always. Drift correction and the rollback of a
	// failed apply are not held back.
	Apply window.Schedule
	// Download: resolve, download and verify new revisions only inside
	// one of these windows (for metered links); nil: always.
	Download window.Schedule
}

// Identity returns the device's identity for rollouts: device.id and
// device.labels, or, without device.id, an id derived from the machine id
// in IDFile (32 lowercase hex digits, the systemd app-specific id of
// berth). It is an error wrapping ErrNoDeviceID when there is no stable
// id: the agent must not start then, or it would land in a different wave
// at every start.
func (d Device) Identity() (rollout.Device, error) {
	labels := maps.Clone(d.Labels)
	if d.ID != "" {
		return rollout.Device{ID: d.ID, Labels: labels}, nil
	}
	file := d.IDFile
	if file == "" {
		file = DefaultMachineIDFile
	}
	id, err := machineID(file)
	if err != nil {
		return rollout.Device{}, fmt.Errorf("%w: %w; set device.id in the agent configuration (or device.idFile to a machine id file)", ErrNoDeviceID, err)
	}
	return rollout.Device{ID: appSpecific(id), Labels: labels}, nil
}

// machineID reads a machine-id(5) file: 32 lowercase hex digits and a
// newline. "uninitialized" (first boot) and all zeros are not ids.
func machineID(file string) ([16]byte, error) {
	var id [16]byte
	f, err := os.Open(file)
	if err != nil {
		return id, fmt.Errorf("machine id: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 128))
	if err != nil {
		return id, fmt.Errorf("machine id %s: %w", file, err)
	}
	s := bytes.TrimSpace(b)
	if string(s) == "uninitialized" {
		return id, fmt.Errorf("machine id %s is not initialized yet (first boot)", file)
	}
	if len(s) != 32 || !bytes.Equal(s, bytes.ToLower(s)) {
		return id, fmt.Errorf("machine id %s does not hold 32 lowercase hex digits", file)
	}
	if _, err := hex.Decode(id[:], s); err != nil {
		return id, fmt.Errorf("machine id %s does not hold 32 lowercase hex digits", file)
	}
	if id == [16]byte{} {
		return id, fmt.Errorf("machine id %s is all zeros", file)
	}
	return id, nil
}

// appSpecific is sd_id128_get_machine_app_specific: HMAC-SHA256 keyed with
// the machine id over berth's app id, truncated to 128 bits and marked as
// a version 4, variant 1 UUID.
func appSpecific(machine [16]byte) string {
	m := hmac.New(sha256.New, machine[:])
	m.Write(appID[:])
	sum := m.Sum(nil)[:16]
	sum[6] = sum[6]&0x0f | 0x40
	sum[8] = sum[8]&0x3f | 0x80
	return hex.EncodeToString(sum)
}
