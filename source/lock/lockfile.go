package lock

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/state"
)

// The result of Lock: the overlay of rewritten files and berth.lock.json,
// whose format the package doc shows.

// Entry is an image or chart pinned by Lock.
type Entry struct {
	// App is the name of the app or extension that references it.
	App string `json:"app"`
	// Extension is set when App is an extension.
	Extension bool `json:"extension,omitempty"`
	// File is the file that references it, relative to the locked folder.
	File string `json:"file"`
	// Service is the Compose service, for an image.
	Service string `json:"service,omitempty"`
	// Kind is KindImage or KindChart.
	Kind string `json:"kind"`
	// Ref is the reference as written; for a chart, its oci:// URL, ':' and
	// its version.
	Ref string `json:"ref"`
	// Repository is the fully qualified repository, such as
	// docker.io/library/nginx or ghcr.io/acme/charts/metrics: Repository,
	// '@' and Digest pull exactly what was pinned.
	Repository string `json:"repository"`
	// Digest is the sha256 digest of the manifest or index.
	Digest string `json:"digest"`
}

// result builds the overlay. st has the digests written in berth.yaml.
func (l *locker) result(data []byte, doc *yaml.Node, st *state.DeviceState) (*Result, error) {
	res := &Result{Overlay: map[string][]byte{}, Rollout: st.Rollout}
	var paths []string
	for p, pf := range l.files {
		if len(pf.values) > 0 {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		out, err := rewriteCompose(l.files[p])
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		res.Overlay[p] = out
	}
	if len(l.inserts) > 0 {
		out, err := rewriteState(data, doc, l.inserts, st)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", state.FileName, err)
		}
		res.Overlay[state.FileName] = out
	}
	sort.SliceStable(l.entries, func(i, j int) bool {
		a, b := l.entries[i], l.entries[j]
		for _, c := range [][2]string{{a.App, b.App}, {a.File, b.File}, {a.Service, b.Service}, {a.Kind, b.Kind}, {a.Ref, b.Ref}} {
			if c[0] != c[1] {
				return c[0] < c[1]
			}
		}
		return false
	})
	res.Lock = l.entries
	if res.Lock == nil {
		res.Lock = []Entry{}
	}
	lf, err := encodeLock(res.Lock)
	if err != nil {
		return nil, err
	}
	res.Overlay[LockFile] = lf
	return res, nil
}

// encodeLock encodes the lock file.
func encodeLock(entries []Entry) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	err := enc.Encode(struct {
		APIVersion string  `json:"apiVersion"`
		Kind       string  `json:"kind"`
		Entries    []Entry `json:"entries"`
	}{state.APIVersion, "Lock", entries})
	if err != nil {
		return nil, fmt.Errorf("lock: encode %s: %w", LockFile, err)
	}
	return buf.Bytes(), nil
}
