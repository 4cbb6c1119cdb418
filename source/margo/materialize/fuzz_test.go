package materialize

import (
	"errors"
	"testing"

	"github.com/berth-dev/berth/internal/errdef"
)

// FuzzChartFile: a chart's Chart.yaml, from a registry, never panics the
// check; it is either the chart asked for or refused as not a chart.
func FuzzChartFile(f *testing.F) {
	for _, s := range []string{
		"apiVersion: v2\nname: monitor\nversion: 0.3.0+b1\n",
		"name: monitor\nversion: 0.3.0\n",
		"name: [\n",
		"name: &a monitor\nversion: *a\n",
		"{name: monitor, version: 0.3.0+b1, dependencies: [{name: x}]}",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		err := checkChartFile(raw, "monitor", "0.3.0+b1")
		if err != nil && (!errors.Is(err, ErrNotChart) || !errors.Is(err, errdef.ErrRefused)) {
			t.Fatalf("error outside the refusal class: %v", err)
		}
	})
}
