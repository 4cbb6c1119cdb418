package bench

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fluxBinary returns the flux CLI to compare against: $FLUX, else the one
// /work/shared/tools/peers.sh builds into ~/.cache/berth-acceptance/bin
// (flux2 cannot be built from go.mod's graph like crane: its cmd embeds
// generated manifests).
func fluxBinary(b *testing.B) string {
	b.Helper()
	p := os.Getenv("FLUX")
	if p == "" {
		home, _ := os.UserHomeDir()
		p = filepath.Join(home, ".cache", "berth-acceptance", "bin", "flux")
	}
	if _, err := os.Stat(p); err != nil {
		b.Fatalf("flux CLI not found at %s: build it with `bash /work/shared/tools/peers.sh` (flux2 v2.9.5 from the Go module proxy) or point $FLUX at one", p)
	}
	return p
}

// BenchmarkPullVsFlux times `berth pull` (resolve the tag, verify the
// signature, stream, check the digest, extract, make the revision durable)
// against `flux pull artifact` (resolve, stream, extract; no signature, no
// flush) of the same 256 MiB artifact of incompressible data from the same
// registry, in three shapes: issue 11's 256 MiB in 3,000 files of about
// 87 KiB, many small files (5,000 of 2 KiB) and a few big ones (3 of
// 64 MiB). Before every run, untimed, `sync` writes back what earlier runs
// left, so that no run pays for another's data. Besides flux alone it
// reports flux followed by `sync` (timed), which makes flux's output as
// durable as berth's. Target from issue 11: berth/flux ≤ 1.0 on the
// 3,000-file shape. One untimed warm-up of each, then five rounds,
// rotating which goes first; medians.
func BenchmarkPullVsFlux(b *testing.B) {
	flux := fluxBinary(b)
	e := newEnv(b)
	for _, shape := range []struct {
		name            string
		total, fileSize int64
	}{
		{"3000files", 256 << 20, (256 << 20) / 3000},
		{"5000x2KiB", 5000 * 2 << 10, 2 << 10},
		{"3x64MiB", 3 * 64 << 20, 64 << 20},
	} {
		b.Run(shape.name, func(b *testing.B) {
			e.b = b
			a := e.pushArtifact("flux-"+strings.ToLower(shape.name), shape.total, shape.fileSize)
			var berthT, fluxT, fluxSyncT []time.Duration
			runs := []func(){
				func() {
					syncAll(b)
					d, _ := e.pullBerth(a)
					berthT = append(berthT, d)
				},
				func() {
					syncAll(b)
					d, s := e.pullFlux(flux, a)
					fluxT = append(fluxT, d)
					fluxSyncT = append(fluxSyncT, d+s)
				},
			}
			for _, run := range runs { // warm-up: page cache, binaries
				run()
			}
			berthT, fluxT, fluxSyncT = nil, nil, nil
			b.ResetTimer()
			const rounds = 5
			for i := 0; i < b.N; i++ {
				for r := 0; r < rounds; r++ {
					for k := range runs {
						runs[(r+k)%len(runs)]()
					}
				}
			}
			b.StopTimer()
			bm, fm, fsm := median(berthT), median(fluxT), median(fluxSyncT)
			b.ReportMetric(bm.Seconds(), "berth-s")
			b.ReportMetric(fm.Seconds(), "flux-s")
			b.ReportMetric(fsm.Seconds(), "flux+sync-s")
			b.ReportMetric(bm.Seconds()/fm.Seconds(), "ratio")
			b.ReportMetric(bm.Seconds()/fsm.Seconds(), "ratio-vs-flux+sync")
			b.Logf("%s: berth pull: %s; flux pull artifact: %s; flux + sync: %s",
				shape.name, fmtDurations(berthT), fmtDurations(fluxT), fmtDurations(fluxSyncT))
		})
	}
}

// pullFlux runs flux pull artifact into a new dir, then sync, checks what
// arrived and removes it. It returns the time of flux and of the sync.
func (e *env) pullFlux(flux string, a artifact) (elapsed, syncTime time.Duration) {
	e.b.Helper()
	dir := filepath.Join(e.b.TempDir(), "flux-out")
	if err := os.Mkdir(dir, 0o755); err != nil { // flux wants it to exist
		e.b.Fatal(err)
	}
	cmd := exec.Command(flux, "pull", "artifact", a.url, "--output", dir)
	// flux reads credentials from the Docker config and trusts the
	// system roots, which SSL_CERT_FILE replaces.
	cmd.Env = e.environ("SSL_CERT_FILE="+e.reg.CAFile, "HOME="+e.b.TempDir())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := runWithTimeout(cmd)
	elapsed = time.Since(start)
	if err != nil {
		e.b.Fatalf("flux pull artifact %s: %v\n%s", a.url, err, clip(out.String()))
	}
	start = time.Now()
	syncAll(e.b)
	syncTime = time.Since(start)
	e.checkAndRemove(dir, a)
	return elapsed, syncTime
}

// syncAll runs sync(1): every file system writes back its dirty data.
func syncAll(b *testing.B) {
	b.Helper()
	if out, err := exec.Command("sync").CombinedOutput(); err != nil {
		b.Fatalf("sync: %v\n%s", err, out)
	}
}
