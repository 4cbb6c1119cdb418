package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
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
func (d *DockerEngine) call(ctx context.Context, method, path string, header http.Header, body, out any) (int, error) {
	resp, err := d.send(ctx, method, path, header, body)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
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
