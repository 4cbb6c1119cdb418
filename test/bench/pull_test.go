package bench

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkPull256MiB times `berth pull` (resolve the tag, verify the
// signature, stream, check the digest, extract, fsync) of a 256 MiB
// artifact of incompressible data against two crane pipelines in the same
// run, from the same registry:
//
//   - `crane blob REPO@LAYER | tar -xz` (GNU gzip decompresses): crane-s
//     and ratio;
//   - `crane export REPO:TAG - | tar -x` (Go's gzip, issue 3's wording):
//     crane-export-s and ratio-export.
//
// One untimed warm-up of each, then three rounds, rotating which goes
// first. It reports medians, berth/crane ratios (target from issue 3:
// ≤ 1.0), berth's peak RSS, and, as information, crane blob's time plus
// fsyncing what tar wrote (berth fsyncs before it returns; tar does not).
func BenchmarkPull256MiB(b *testing.B) {
	e := newEnv(b)
	a := e.pushArtifact("pull-256mib", 256<<20, 4<<20)

	var berthT, blobT, blobSyncT, exportT []time.Duration
	var peakRSS float64
	runs := []func(){
		func() {
			d, rss := e.pullBerth(a)
			berthT = append(berthT, d)
			peakRSS = max(peakRSS, rss)
		},
		func() {
			d, sync := e.pullCrane(a, craneBlob)
			blobT = append(blobT, d)
			blobSyncT = append(blobSyncT, d+sync)
		},
		func() {
			d, _ := e.pullCrane(a, craneExport)
			exportT = append(exportT, d)
		},
	}
	for _, run := range runs { // warm-up: page cache, binaries
		run()
	}
	berthT, blobT, blobSyncT, exportT = nil, nil, nil, nil
	b.ResetTimer()

	const rounds = 3
	for i := 0; i < b.N; i++ {
		for r := 0; r < rounds; r++ {
			for k := range runs {
				runs[(r+k)%len(runs)]()
			}
		}
	}
	b.StopTimer()
	bm, cm, em := median(berthT), median(blobT), median(exportT)
	b.ReportMetric(bm.Seconds(), "berth-s")
	b.ReportMetric(cm.Seconds(), "crane-s")
	b.ReportMetric(bm.Seconds()/cm.Seconds(), "ratio")
	b.ReportMetric(em.Seconds(), "crane-export-s")
	b.ReportMetric(bm.Seconds()/em.Seconds(), "ratio-export")
	b.ReportMetric(median(blobSyncT).Seconds(), "crane+fsync-s")
	b.ReportMetric(peakRSS, "berth-peak-rss-MiB")
	b.Logf("berth pull: %s; crane blob | tar -xz: %s (plus fsync: %s); crane export | tar -x: %s",
		fmtDurations(berthT), fmtDurations(blobT), fmtDurations(blobSyncT), fmtDurations(exportT))
}

// BenchmarkPullRSS reports berth pull's peak RSS for a 10 MiB and a 1 GiB
// artifact of incompressible data: a streaming pull keeps it flat (target
// from issue 14: ≤ 48 MiB for 1 GiB, flat from 10 MiB; berth links no
// applier, so its start-up costs about 28 MiB). rss-verify-MiB, the peak RSS of
// berth verify on the same artifact, shows how much of that is the pull.
func BenchmarkPullRSS(b *testing.B) {
	e := newEnv(b)
	small := e.pushArtifact("rss-10mib", 10<<20, 1<<20)
	large := e.pushArtifact("rss-1gib", 1<<30, 4<<20)
	b.ResetTimer()

	var rssSmall, rssLarge float64
	var tSmall, tLarge []time.Duration
	for i := 0; i < b.N; i++ {
		d, rss := e.pullBerth(small)
		tSmall, rssSmall = append(tSmall, d), max(rssSmall, rss)
		d, rss = e.pullBerth(large)
		tLarge, rssLarge = append(tLarge, d), max(rssLarge, rss)
	}
	b.StopTimer()
	b.ReportMetric(rssSmall, "rss-10MiB-MiB")
	b.ReportMetric(rssLarge, "rss-1GiB-MiB")
	b.ReportMetric(rssLarge/rssSmall, "rss-ratio")
	b.ReportMetric(median(tLarge).Seconds(), "pull-1GiB-s")
	// What verifying alone costs: the floor under both pulls.
	b.ReportMetric(e.verifyRSS(large), "rss-verify-MiB")
	b.Logf("berth pull 10 MiB: %s, peak RSS %.1f MiB; 1 GiB: %s, peak RSS %.1f MiB",
		fmtDurations(tSmall), rssSmall, fmtDurations(tLarge), rssLarge)
}

func fmtDurations(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.Round(time.Millisecond).String()
	}
	return fmt.Sprint(s)
}
