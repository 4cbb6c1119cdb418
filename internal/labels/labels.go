// Package labels checks device labels and label selectors the way
// Kubernetes checks its labels, so that a fleet's labels can be copied from
// (and to) a cluster's: a key is an optional DNS subdomain prefix and '/'
// then a name of at most 63 letters, digits, '-', '_' and '.', starting and
// ending with a letter or digit; a value is empty or such a name.
package labels

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/validate/content"
)

// CheckKey returns why k is not a valid label key, or nil.
func CheckKey(k string) error {
	if msgs := content.IsLabelKey(k); len(msgs) > 0 {
		return fmt.Errorf("invalid label key %q: %s", k, strings.Join(msgs, "; "))
	}
	return nil
}

// CheckValue returns why v is not a valid label value, or nil.
func CheckValue(v string) error {
	if msgs := content.IsLabelValue(v); len(msgs) > 0 {
		return fmt.Errorf("invalid label value %q: %s", v, strings.Join(msgs, "; "))
	}
	return nil
}

// Match reports whether every key of selector is in labels with the same
// value. An empty selector matches every set of labels.
func Match(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
