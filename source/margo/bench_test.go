package margo

import (
	"fmt"
	"testing"

	"github.com/berth-dev/berth/source/margo/margotest"
)

// BenchmarkPoll measures a poll of a 100-deployment manifest that did not
// change (304) and one where a single deployment changed (the manifest and
// that YAML only), reporting the body bytes downloaded per poll. There is
// no peer WFM client to compare with; the figures show what a poll costs.
func BenchmarkPoll(b *testing.B) {
	for _, tc := range []struct {
		name   string
		change bool
	}{{"not-modified", false}, {"one-changed", true}} {
		b.Run(tc.name, func(b *testing.B) {
			f := newBenchFixture(b)
			yamls := make([][]byte, 100)
			for i := range yamls {
				yamls[i] = depYAML(i+1, "1.0.0")
			}
			f.wfm.Publish(1, yamls...)
			st := &State{Version: StateVersion}
			d, err := f.c.Poll(b.Context(), st)
			if err != nil {
				b.Fatal(err)
			}
			st.Accept(d)
			version := uint64(1)
			var bytes int64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if tc.change {
					b.StopTimer()
					version++
					yamls[0] = depYAML(1, fmt.Sprintf("1.0.%d", version))
					f.wfm.Publish(version, yamls...)
					b.StartTimer()
				}
				d, err := f.c.Poll(b.Context(), st)
				if err != nil {
					b.Fatal(err)
				}
				if tc.change && (d.NotModified || d.Fetch.Individual != 1 || d.Fetch.Bundle) {
					b.Fatalf("fetch = %+v", d.Fetch)
				}
				bytes += d.Fetch.Bytes
				st.Accept(d)
			}
			b.ReportMetric(float64(bytes)/float64(b.N), "bytes/poll")
		})
	}
}

func newBenchFixture(b *testing.B) *fixture {
	w := margotest.Start(b, margotest.Options{})
	dir := b.TempDir()
	files := w.ClientFiles(b, dir+"/id", "press-42")
	c, err := New(Options{URL: w.URL, DeviceID: "press-42", CacheDir: dir + "/cache", WFMID: w.ID,
		Identity: Identity{CertFile: files.Cert, KeyFile: files.Key, TrustBundleFile: files.Bundle}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	return &fixture{wfm: w, dir: dir, files: files, c: c}
}
