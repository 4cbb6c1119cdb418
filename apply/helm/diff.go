package helm

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
)

// Comparing a rendered object with the live one, for drift: only the
// fields the chart sets count.

// canonical returns an object as a JSON-like map, normalised through its
// Go type when the scheme knows its kind (quantities, int-or-strings and
// the like then compare as the API server writes them).
func canonical(obj runtime.Object) map[string]any {
	var m map[string]any
	if u, ok := obj.(*unstructured.Unstructured); ok {
		m = u.Object
	} else if c, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj); err == nil {
		m = c
	} else {
		return nil
	}
	gvk := obj.GetObjectKind().GroupVersionKind()
	if typed, err := scheme.Scheme.New(gvk); err == nil {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, typed); err == nil {
			if c, err := runtime.DefaultUnstructuredConverter.ToUnstructured(typed); err == nil {
				return c
			}
		}
	}
	return m
}

// changedFields compares the fields a rendered object sets (want) with the
// live object (got): it returns the paths whose live value differs. Of the
// metadata only labels and annotations count, and status never does; a
// field want leaves null, empty or zero matches a missing one.
func changedFields(want, got map[string]any) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		switch k {
		case "apiVersion", "kind", "status":
			continue
		case "metadata":
			wm, _ := want[k].(map[string]any)
			gm, _ := got[k].(map[string]any)
			for _, mk := range []string{"labels", "annotations"} {
				diffValue(wm[mk], gm[mk], "metadata."+mk, &out)
			}
			continue
		}
		diffValue(want[k], got[k], k, &out)
	}
	return out
}

// diffValue appends to out the paths under path where got differs from the
// subset want.
func diffValue(want, got any, path string, out *[]string) {
	switch w := want.(type) {
	case nil:
		return
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			if len(w) == 0 && got == nil {
				return
			}
			*out = append(*out, path)
			return
		}
		for _, k := range slices.Sorted(maps.Keys(w)) {
			diffValue(w[k], g[k], fieldPath(path, k), out)
		}
	case []any:
		g, ok := got.([]any)
		if !ok {
			if len(w) == 0 && got == nil {
				return
			}
			*out = append(*out, path)
			return
		}
		if len(g) != len(w) {
			*out = append(*out, path)
			return
		}
		for i := range w {
			diffValue(w[i], g[i], fmt.Sprintf("%s[%d]", path, i), out)
		}
	default:
		if got == nil && isZero(w) {
			return
		}
		if !scalarEqual(w, got) {
			*out = append(*out, path)
		}
	}
}

func fieldPath(path, k string) string {
	if strings.ContainsAny(k, "./") {
		k = "[" + k + "]"
		if path == "" {
			return k
		}
		return path + k
	}
	if path == "" {
		return k
	}
	return path + "." + k
}

func isZero(v any) bool {
	switch x := v.(type) {
	case string:
		return x == ""
	case bool:
		return !x
	}
	f, ok := number(v)
	return ok && f == 0
}

func scalarEqual(a, b any) bool {
	if fa, ok := number(a); ok {
		fb, ok := number(b)
		return ok && fa == fb
	}
	return reflect.DeepEqual(a, b)
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case int:
		return float64(x), true
	case int32:
		return float64(x), true
	case int64:
		return float64(x), true
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}
