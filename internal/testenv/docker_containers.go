package testenv

import (
	"encoding/binary"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// What Compose leaves on the engine: containers, volumes and networks,
// found by label, and removed by project.

// Container is what Containers reports of one container.
type Container struct {
	ID    string
	Name  string // without the leading "/"
	Image string // as the container was created from, e.g. "127.0.0.1:5000/acme/hello@sha256:..."
	// ImageID is the local image ID ("sha256:...").
	ImageID string
	// State is "created", "running", "paused", "restarting", "removing",
	// "exited" or "dead".
	State string
	// Health is "" (no healthcheck), "starting", "healthy" or "unhealthy".
	Health       string
	ExitCode     int
	RestartCount int
	Labels       map[string]string
	// Ports maps a container port ("8080/tcp") to its first host binding
	// ("127.0.0.1:32768").
	Ports map[string]string
}

// labelFilters turns {"k": "v", "only-key": ""} into Engine API filters.
func labelFilters(labels map[string]string) string {
	f := map[string][]string{}
	for k, v := range labels {
		if v == "" {
			f["label"] = append(f["label"], k)
		} else {
			f["label"] = append(f["label"], k+"="+v)
		}
	}
	data, _ := json.Marshal(f)
	return url.QueryEscape(string(data))
}

// Containers lists every container, running or not, whose labels match
// labelFilter: each key must be present, with that value unless the value
// is "". An empty filter lists every container of the engine.
func (d *DockerEngine) Containers(t testing.TB, labelFilter map[string]string) []Container {
	t.Helper()
	var list []struct {
		ID string `json:"Id"`
	}
	d.Do(t, http.MethodGet, "/containers/json?all=1&filters="+labelFilters(labelFilter), nil, &list)
	var out []Container
	for _, c := range list {
		if ctr, ok := d.Inspect(t, c.ID); ok {
			out = append(out, ctr)
		}
	}
	return out
}

// Inspect reports one container by ID or name; false when there is none.
func (d *DockerEngine) Inspect(t testing.TB, idOrName string) (Container, bool) {
	t.Helper()
	var in struct {
		ID     string `json:"Id"`
		Name   string
		Image  string // the image ID
		Config struct {
			Image  string
			Labels map[string]string
		}
		State struct {
			Status   string
			ExitCode int
			Health   *struct{ Status string }
		}
		RestartCount    int
		NetworkSettings struct {
			Ports map[string][]struct{ HostIP, HostPort string }
		}
	}
	if d.Do(t, http.MethodGet, "/containers/"+url.PathEscape(idOrName)+"/json", nil, &in) == http.StatusNotFound {
		return Container{}, false
	}
	c := Container{
		ID:           in.ID,
		Name:         strings.TrimPrefix(in.Name, "/"),
		Image:        in.Config.Image,
		ImageID:      in.Image,
		State:        in.State.Status,
		ExitCode:     in.State.ExitCode,
		RestartCount: in.RestartCount,
		Labels:       in.Config.Labels,
		Ports:        map[string]string{},
	}
	if in.State.Health != nil {
		c.Health = in.State.Health.Status
	}
	for port, bindings := range in.NetworkSettings.Ports {
		if len(bindings) > 0 {
			c.Ports[port] = net.JoinHostPort(bindings[0].HostIP, bindings[0].HostPort)
		}
	}
	return c, true
}

// StopContainer stops a container (SIGTERM, SIGKILL after 10s). A container
// that is gone or already stopped is fine.
func (d *DockerEngine) StopContainer(t testing.TB, id string) {
	t.Helper()
	d.Do(t, http.MethodPost, "/containers/"+url.PathEscape(id)+"/stop?t=10", nil, nil)
}

// RemoveContainer removes a container by force, running or not, with its
// anonymous volumes, like `docker rm -f -v`. One that is gone is fine.
func (d *DockerEngine) RemoveContainer(t testing.TB, id string) {
	t.Helper()
	d.Do(t, http.MethodDelete, "/containers/"+url.PathEscape(id)+"?force=1&v=1", nil, nil)
}

// Logs returns what a container wrote to stdout and stderr (not a TTY),
// interleaved, at most the last tail lines (0: all).
func (d *DockerEngine) Logs(t testing.TB, id string, tail int) string {
	t.Helper()
	q := "stdout=1&stderr=1&tail=all"
	if tail > 0 {
		q = "stdout=1&stderr=1&tail=" + strconv.Itoa(tail)
	}
	var raw string
	if d.Do(t, http.MethodGet, "/containers/"+url.PathEscape(id)+"/logs?"+q, nil, &raw) == http.StatusNotFound {
		return ""
	}
	return demuxLogs([]byte(raw))
}

// demuxLogs joins the payloads of Docker's multiplexed log stream (8-byte
// frame headers: stream, 0, 0, 0, big-endian size). Text that does not
// look like frames (a TTY container) is returned as is.
func demuxLogs(b []byte) string {
	var out strings.Builder
	rest := b
	for len(rest) > 0 {
		if len(rest) < 8 || rest[0] > 2 || rest[1] != 0 || rest[2] != 0 || rest[3] != 0 {
			return string(b)
		}
		n := int(binary.BigEndian.Uint32(rest[4:8]))
		if len(rest) < 8+n {
			return string(b)
		}
		out.Write(rest[8 : 8+n])
		rest = rest[8+n:]
	}
	return out.String()
}

// Volume is what Volumes reports of one volume.
type Volume struct {
	Name       string
	Driver     string
	Mountpoint string
	Labels     map[string]string
}

// Volumes lists the volumes whose labels match labelFilter (as in
// Containers).
func (d *DockerEngine) Volumes(t testing.TB, labelFilter map[string]string) []Volume {
	t.Helper()
	var resp struct{ Volumes []Volume }
	d.Do(t, http.MethodGet, "/volumes?filters="+labelFilters(labelFilter), nil, &resp)
	return resp.Volumes
}

// Network is what Networks reports of one network.
type Network struct {
	ID     string `json:"Id"`
	Name   string
	Driver string
	Labels map[string]string
}

// Networks lists the networks whose labels match labelFilter (as in
// Containers).
func (d *DockerEngine) Networks(t testing.TB, labelFilter map[string]string) []Network {
	t.Helper()
	var list []Network
	d.Do(t, http.MethodGet, "/networks?filters="+labelFilters(labelFilter), nil, &list)
	return list
}

// RemoveProjectResources removes the containers (by force), networks and
// volumes whose Compose project label starts with projectPrefix, so a test
// can leave the engine as it found it:
//
//	t.Cleanup(func() { docker.RemoveProjectResources(t, "berth-t1") })
//
// An empty prefix fails the test: it would take every project of the engine.
func (d *DockerEngine) RemoveProjectResources(t testing.TB, projectPrefix string) {
	t.Helper()
	if projectPrefix == "" {
		t.Fatalf("testenv: RemoveProjectResources needs a project prefix")
	}
	ours := func(labels map[string]string) bool {
		return strings.HasPrefix(labels[ComposeProjectLabel], projectPrefix)
	}
	project := map[string]string{ComposeProjectLabel: ""}
	for _, c := range d.Containers(t, project) {
		if ours(c.Labels) {
			d.RemoveContainer(t, c.ID)
		}
	}
	for _, n := range d.Networks(t, project) {
		if ours(n.Labels) {
			d.Do(t, http.MethodDelete, "/networks/"+url.PathEscape(n.ID), nil, nil)
		}
	}
	for _, v := range d.Volumes(t, project) {
		if ours(v.Labels) {
			d.Do(t, http.MethodDelete, "/volumes/"+url.PathEscape(v.Name)+"?force=1", nil, nil)
		}
	}
}
