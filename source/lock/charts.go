package lock

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/internal/readcap"
	"github.com/berth-dev/berth/state"
)

// The Helm part of Lock: find the oci:// chart of every Helm app, check its
// chart folder and values files, and write the digests into berth.yaml.

// scanHelm records a site for the oci:// chart of u and checks its chart
// folder and values files.
func (l *locker) scanHelm(u unit) {
	h := u.app.Helm
	_, hn := get(u.node, "helm")
	if h.Chart != "" {
		repo := strings.TrimPrefix(h.Chart, "oci://")
		_, vn := get(hn, "version")
		l.sites = append(l.sites, &site{
			u:       u,
			entry:   Entry{App: u.app.Name, Extension: u.ext, File: state.FileName, Kind: KindChart, Ref: h.Chart + ":" + h.Version, Repository: repo},
			resolve: repo + ":" + strings.ReplaceAll(h.Version, "+", "_"),
			line:    lineOf(hn, "chart"),
			helm:    hn,
			version: vn,
		})
	}
	if h.Path != "" {
		if err := state.RegularFile(l.fsys, path.Join(h.Path, "Chart.yaml")); err != nil {
			l.fail(u, state.FileName, lineOf(hn, "path"), "", "", "", fmt.Errorf("chart folder %q has no Chart.yaml: %w", h.Path, err))
		}
	}
	_, vfs := get(hn, "valuesFiles")
	for i, vf := range h.ValuesFiles {
		line := lineOf(hn, "valuesFiles")
		if vfs != nil && i < len(vfs.Content) {
			line = vfs.Content[i].Line
		}
		if err := checkValues(l.fsys, vf); err != nil {
			l.fail(u, state.FileName, line, "", "", "", err)
		}
	}
}

// checkValues checks that a values file exists and is a YAML mapping.
func checkValues(fsys fs.FS, p string) error {
	if err := state.RegularFile(fsys, p); err != nil {
		return fmt.Errorf("values file %w", err)
	}
	data, err := readcap.File(fsys, p, maxComposeSize)
	if err != nil {
		return fmt.Errorf("values file: %w", err)
	}
	doc, err := decodeYAML(data)
	if err != nil {
		if line := yamlErrLine(err); line > 0 {
			return fmt.Errorf("values file %q, line %d: %w", p, line, err)
		}
		return fmt.Errorf("values file %q: %w", p, err)
	}
	if doc != nil {
		if n := deref(doc.Content[0]); n != nil && !isNull(n) && n.Kind != yaml.MappingNode {
			return fmt.Errorf("values file %q: must be a mapping", p)
		}
	}
	return nil
}

// rewriteState returns berth.yaml with the digests written after the
// versions, edited in place if it can be, encoded again otherwise. st is
// what the result must parse to.
func rewriteState(data []byte, doc *yaml.Node, inserts []insert, st *state.DeviceState) ([]byte, error) {
	starts := lineStarts(data)
	var edits []edit
	for _, ins := range inserts {
		e, ok := insertAfter(data, starts, ins.helm, ins.version, "digest", ins.digest)
		if !ok {
			edits = nil
			break
		}
		edits = append(edits, e)
	}
	if edits != nil {
		if out, ok := applyEdits(data, edits); ok && stateMatches(out, st) {
			return out, nil
		}
	}
	for _, ins := range inserts {
		for i := 1; i < len(ins.helm.Content); i += 2 {
			if ins.helm.Content[i] == ins.version {
				k := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "digest"}
				v := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: ins.digest}
				ins.helm.Content = append(ins.helm.Content[:i+1], append([]*yaml.Node{k, v}, ins.helm.Content[i+1:]...)...)
				break
			}
		}
	}
	out, err := encodeYAML(doc)
	if err != nil {
		return nil, err
	}
	if !stateMatches(out, st) {
		return nil, errors.New("cannot write the chart digests: simplify its YAML")
	}
	return out, nil
}

// stateMatches checks that out parses to st.
func stateMatches(out []byte, st *state.DeviceState) bool {
	got, err := state.Parse(state.FileName, out)
	if err != nil || len(got.Apps) != len(st.Apps) || len(got.Extensions) != len(st.Extensions) {
		return false
	}
	want := append(append([]state.App(nil), st.Apps...), st.Extensions...)
	for i, a := range append(got.Apps, got.Extensions...) {
		b := want[i]
		if a.Helm != nil && b.Helm != nil {
			// Values may hold NaN, which reflect.DeepEqual never finds
			// equal: compare them apart.
			if !sameValue(a.Helm.Values, b.Helm.Values) {
				return false
			}
			ah, bh := *a.Helm, *b.Helm
			ah.Values, bh.Values = nil, nil
			a.Helm, b.Helm = &ah, &bh
		}
		if !reflect.DeepEqual(a, b) {
			return false
		}
	}
	return got.APIVersion == st.APIVersion && got.Kind == st.Kind
}

// sameValue is reflect.DeepEqual for decoded YAML values, NaN equal to NaN.
func sameValue(a, b any) bool {
	switch a := a.(type) {
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) || (a == nil) != (b == nil) {
			return false
		}
		for k, v := range a {
			w, ok := b[k]
			if !ok || !sameValue(v, w) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !sameValue(a[i], b[i]) {
				return false
			}
		}
		return true
	case float64:
		b, ok := b.(float64)
		return ok && (a == b || (math.IsNaN(a) && math.IsNaN(b)))
	}
	return reflect.DeepEqual(a, b)
}
