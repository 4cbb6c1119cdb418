package testenv

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Images on the engine: present, labelled, removed, pulled from a test
// registry whose CA the engine is made to trust.

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
