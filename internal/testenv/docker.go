package testenv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// DefaultDockerHost is the engine Docker uses when DOCKER_HOST is not set.
const DefaultDockerHost = "unix:///var/run/docker.sock"

// NoDockerMessage is how Docker fails a test when no engine answers.
const NoDockerMessage = "no Docker Engine: run `make test` (starts one as root) or start dockerd and set DOCKER_HOST"

// ComposeProjectLabel is the label Compose puts on every container, network
// and volume of a project.
const ComposeProjectLabel = "com.docker.compose.project"

// Engine API versions: the newest this code is written against is used
// unless the engine is older (Debian bookworm's docker.io 20.10 speaks 1.41)
// or no longer accepts it.
const (
	dockerMaxAPIVersion = "1.47"
	dockerMinAPIVersion = "1.41"
)

// dockerRequestTimeout bounds one Engine API call (a pull may take longer:
// it has its own).
const dockerRequestTimeout = 2 * time.Minute

// DockerEngine is a running Docker Engine, reached over its API with plain
// net/http (no Docker client library).
type DockerEngine struct {
	host    string // as in DOCKER_HOST
	base    string // "http://docker" or "http://HOST:PORT"
	version string // negotiated API version, "1.41"
	client  *http.Client
	// certsDir is the engine's certs.d directory (a variable for tests).
	certsDir string
}

// Docker connects to the Docker Engine at $DOCKER_HOST (unix:///path or
// tcp://host:port; plain HTTP), or at /var/run/docker.sock when it is not set,
// and negotiates the API version. No engine fails the test with
// NoDockerMessage: it is never a reason to skip. `make test` starts one
// (test/scripts/dockerd.sh) and sets DOCKER_HOST.
func Docker(t testing.TB) *DockerEngine {
	t.Helper()
	d, err := connectDocker(os.Getenv("DOCKER_HOST"))
	if err != nil {
		t.Fatalf("%s (%v)", NoDockerMessage, err)
	}
	return d
}

func connectDocker(host string) (*DockerEngine, error) {
	if host == "" {
		host = DefaultDockerHost
	}
	if os.Getenv("DOCKER_TLS_VERIFY") != "" {
		return nil, errors.New("DOCKER_TLS_VERIFY is set: testenv speaks plain HTTP to the engine only")
	}
	tr := &http.Transport{MaxIdleConns: 8, IdleConnTimeout: 30 * time.Second}
	d := &DockerEngine{host: host, certsDir: "/etc/docker/certs.d"}
	switch {
	case strings.HasPrefix(host, "unix://"):
		sock := strings.TrimPrefix(host, "unix://")
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dialer net.Dialer
			return dialer.DialContext(ctx, "unix", sock)
		}
		d.base = "http://docker"
	case strings.HasPrefix(host, "tcp://"):
		d.base = "http://" + strings.TrimPrefix(host, "tcp://")
	default:
		return nil, fmt.Errorf("DOCKER_HOST=%s: only unix:// and tcp:// are supported", host)
	}
	d.client = &http.Client{Transport: tr}

	var v struct {
		APIVersion    string `json:"ApiVersion"`
		MinAPIVersion string `json:"MinAPIVersion"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.call(ctx, http.MethodGet, "/_ping", nil, nil, nil); err != nil {
		return nil, fmt.Errorf("%s: %w", host, err)
	}
	if _, err := d.call(ctx, http.MethodGet, "/version", nil, nil, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", host, err)
	}
	d.version = negotiateAPIVersion(v.APIVersion, v.MinAPIVersion)
	return d, nil
}

// negotiateAPIVersion picks the version to speak to an engine that
// supports min..server.
func negotiateAPIVersion(server, min string) string {
	v := dockerMaxAPIVersion
	if server != "" && versionLess(server, v) {
		v = server
	}
	if min != "" && versionLess(v, min) {
		v = min
	}
	return v
}

// versionLess compares API versions "1.41" < "1.47" < "1.100".
func versionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) || i < len(pb); i++ {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

// Host is the engine's address in DOCKER_HOST form ("unix:///run/x.sock").
func (d *DockerEngine) Host() string { return d.host }

// APIVersion is the negotiated Engine API version, e.g. "1.41".
func (d *DockerEngine) APIVersion() string { return d.version }

// dockerError is an Engine API answer outside 2xx.
type dockerError struct {
	Method, Path string
	Status       int
	Message      string
}

func (e *dockerError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Status, e.Message)
}

func isNotFound(err error) bool {
	var de *dockerError
	return errors.As(err, &de) && de.Status == http.StatusNotFound
}

// call sends one request; path is relative to the versioned prefix unless it
// is "/_ping" or "/version". A JSON body is marshalled from body (unless it
// is an io.Reader); a 2xx answer is decoded into out when out is not nil.
// maxEngineAnswer bounds an answer of the engine read whole.
const maxEngineAnswer = 64 << 20

func (d *DockerEngine) call(ctx context.Context, method, path string, header http.Header, body, out any) (int, error) {
	resp, err := d.send(ctx, method, path, header, body)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxEngineAnswer))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if out != nil && len(bytes.TrimSpace(data)) > 0 {
		if s, ok := out.(*string); ok {
			*s = string(data)
		} else if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode %q: %w", method, path, clip(string(data)), err)
		}
	}
	return resp.StatusCode, nil
}

// send sends a request and returns the answer when it is 2xx (the caller
// closes the body) or a *dockerError.
func (d *DockerEngine) send(ctx context.Context, method, path string, header http.Header, body any) (*http.Response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case io.Reader:
		rd = b
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(data)
	}
	full := d.base + path
	if path != "/_ping" && path != "/version" {
		full = d.base + "/v" + d.version + path
	}
	req, err := http.NewRequestWithContext(ctx, method, full, rd)
	if err != nil {
		return nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if rd != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		msg := strings.TrimSpace(string(data))
		var m struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(data, &m) == nil && m.Message != "" {
			msg = m.Message
		}
		return nil, &dockerError{Method: method, Path: path, Status: resp.StatusCode, Message: msg}
	}
	return resp, nil
}

// Do calls the Engine API: method, path relative to the version prefix
// (e.g. "/containers/json?all=1"), a JSON body (nil for none) and out to
// decode a JSON answer into (nil to drop it; a *string receives the raw
// text). It returns the HTTP status; a transport error, an answer outside
// 2xx other than 404 and 304 (container already started or stopped), or
// an undecodable answer fails the test.
func (d *DockerEngine) Do(t testing.TB, method, path string, body, out any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), dockerRequestTimeout)
	defer cancel()
	status, err := d.call(ctx, method, path, nil, body, out)
	var de *dockerError
	if errors.As(err, &de) && (de.Status == http.StatusNotFound || de.Status == http.StatusNotModified) {
		return de.Status
	}
	if err != nil {
		t.Fatalf("testenv: docker %s: %v", d.host, err)
	}
	return status
}

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

// ImagePresent reports whether the engine has the image ref ("HOST/REPO:TAG",
// "HOST/REPO@sha256:..." or an image ID) locally.
func (d *DockerEngine) ImagePresent(t testing.TB, ref string) bool {
	t.Helper()
	return d.Do(t, http.MethodGet, "/images/"+ref+"/json", nil, nil) != http.StatusNotFound
}

// ImagesLabelled returns the IDs of the local images whose labels match
// labelFilter (as Containers), so that a test can remove the images it
// built (RemoveImage(t, id+"?force=1")) and no other test's.
func (d *DockerEngine) ImagesLabelled(t testing.TB, labelFilter map[string]string) []string {
	t.Helper()
	var imgs []struct {
		ID string `json:"Id"`
	}
	d.Do(t, http.MethodGet, "/images/json?filters="+labelFilters(labelFilter), nil, &imgs)
	ids := make([]string, 0, len(imgs))
	for _, img := range imgs {
		ids = append(ids, img.ID)
	}
	return ids
}

// RemoveImage removes the local image reference ref (untagging it; the
// image goes when no reference is left and no container uses it). One that
// is not there is fine.
func (d *DockerEngine) RemoveImage(t testing.TB, ref string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), dockerRequestTimeout)
	defer cancel()
	_, err := d.call(ctx, http.MethodDelete, "/images/"+ref, nil, nil, nil)
	var de *dockerError
	if err != nil && !isNotFound(err) && !(errors.As(err, &de) && de.Status == http.StatusConflict) {
		t.Fatalf("testenv: docker %s: %v", d.host, err)
	}
}

// PullImage makes the engine pull ref ("HOST/REPO:TAG" or
// "HOST/REPO@sha256:...") from reg with reg's credentials, like the agent
// will (POST /images/create with X-Registry-Auth). The engine must trust
// reg's CA (TrustRegistry) unless reg is plain HTTP; a nil reg pulls
// without credentials. A failed pull fails the test with the engine's
// message.
func (d *DockerEngine) PullImage(t testing.TB, reg *Registry, ref string) {
	t.Helper()
	if err := d.pull(reg, ref); err != nil {
		t.Fatalf("testenv: docker %s: pull %s: %v", d.host, ref, err)
	}
}

func (d *DockerEngine) pull(reg *Registry, ref string) error {
	repo, tag := splitRef(ref)
	q := url.Values{"fromImage": {repo}}
	if tag != "" {
		q.Set("tag", tag)
	}
	hdr := http.Header{}
	if reg != nil {
		auth, _ := json.Marshal(map[string]string{"username": reg.Username, "password": reg.Password, "serveraddress": reg.Host()})
		hdr.Set("X-Registry-Auth", base64.URLEncoding.EncodeToString(auth))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	resp, err := d.send(ctx, http.MethodPost, "/images/create?"+q.Encode(), hdr, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// The answer is 200 and a stream of JSON progress messages; a failure
	// is a message with "error".
	dec := json.NewDecoder(bufio.NewReader(resp.Body))
	var last string
	for {
		var m struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		}
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("read progress (last %q): %w", last, err)
		}
		if m.Error != "" {
			return errors.New(m.Error)
		}
		last = m.Status
	}
}

// splitRef splits "HOST/REPO@sha256:x" into ("HOST/REPO", "sha256:x") and
// "HOST:PORT/REPO:TAG" into ("HOST:PORT/REPO", "TAG").
func splitRef(ref string) (repo, tag string) {
	if i := strings.Index(ref, "@"); i >= 0 {
		return ref[:i], ref[i+1:]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[:i], ref[i+1:]
	}
	return ref, ""
}

// TrustRegistry makes the engine trust reg's CA for pulls from reg.Host():
// it writes the CA to /etc/docker/certs.d/HOST:PORT/ca.crt, which dockerd
// reads on every pull (no restart), and removes it when the test ends. The
// engine must run on this machine, and writing /etc/docker needs root. A
// plain-HTTP registry needs nothing.
//
// Note that dockerd treats 127.0.0.0/8 as an insecure registry by default:
// for a registry on 127.0.0.1 (every Registry) it skips certificate
// verification and does not read certs.d at all, so pulls work with or
// without this call. It matters for an engine started with
// --insecure-registry settings that drop 127.0.0.0/8; call it anyway, so a
// test states what a device needs.
func (d *DockerEngine) TrustRegistry(t testing.TB, reg *Registry) {
	t.Helper()
	if reg.CAFile == "" {
		return
	}
	ca, err := os.ReadFile(reg.CAFile)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	dir := filepath.Join(d.certsDir, reg.Host())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("testenv: trust registry %s: %v (writing the engine's certs.d needs root: run `make test` as root)", reg.Host(), err)
	}
	file := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(file, ca, 0o644); err != nil {
		t.Fatalf("testenv: trust registry %s: %v", reg.Host(), err)
	}
	t.Cleanup(func() {
		_ = os.Remove(file)
		_ = os.Remove(dir) // only if empty
	})
}
