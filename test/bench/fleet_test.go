package bench

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/reconcile"
	"github.com/berth-dev/berth/reconcile/config"
	"github.com/berth-dev/berth/state"
)

// fleetEnv sets the number of simulated devices of BenchmarkFleetRollout.
const fleetEnv = "BERTH_BENCH_FLEET"

// nopApplier applies nothing: the fleet simulation measures the agents'
// registry traffic and rollout decisions, not Docker.
type nopApplier struct{}

func (nopApplier) Kind() string { return "compose" }
func (nopApplier) Apply(_ context.Context, rev state.Revision, _ *state.Revision) ([]state.AppStatus, error) {
	return []state.AppStatus{{Name: "web", Kind: "compose", Outcome: "applied"}}, nil
}

var _ reconcile.Applier = nopApplier{}

// BenchmarkFleetRollout runs 1,000 agents in this process (the real
// reconcile code, each with its own state folder, device id and
// configuration; ten labelled ring: canary) polling one release tag of
// Debian's docker-registry every 20s with the default jitter of 10 %. It
// pushes a signed release with a plan (canary at once, 10 % after 60s,
// all after 120s) and reports:
//
//   - steady-req/s and steady-req/device/interval: the registry's request
//     rate while nothing changes (target: at most 1 request per device per
//     interval);
//   - rollout-req/s: the rate from the push until the last wave has been
//     open for one more interval (statement look-ups included);
//   - converge-<wave>-s: the time from a wave's opening until its last
//     device adopted (target: within interval + jitter);
//   - peak-req/s-per-mean: the busiest second of steady state over the
//     mean (1 means polls are evenly spread; jitter keeps it low);
//   - heap-KiB/device: the Go heap in use per simulated device.
//
// Run it with:
//
//	go test -run='^$' -bench=FleetRollout -benchtime=1x -timeout 30m ./test/bench/
func BenchmarkFleetRollout(b *testing.B) {
	n := 1000
	if v := os.Getenv(fleetEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 20 {
			b.Fatalf("%s=%q: want a number of devices, at least 20", fleetEnv, v)
		}
	}
	const (
		interval = 20 * time.Second
		earlyAt  = 60 * time.Second
		allAt    = 120 * time.Second
	)
	reg := testenv.StartRegistry(b, testenv.RegistryOptions{})
	berth := testenv.BuildBerth(b)
	dir := b.TempDir()
	prefix := filepath.Join(dir, "cosign")
	run := func(args ...string) string {
		b.Helper()
		out, errOut, code := testenv.Run(b, berth, []string{"DOCKER_CONFIG=" + reg.DockerConfigDir, "COSIGN_PASSWORD=" + keyPassword, "SSL_CERT_FILE=" + reg.CAFile}, args...)
		if code != 0 {
			b.Fatalf("berth %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	run("generate-key", "--prefix", prefix)

	// A fleet repository whose one Compose app names an image in the
	// registry (berth push pins it).
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: reg.CertPool(), MinVersion: tls.VersionTLS12}
	img, _ := random.Image(512, 1)
	ref, _ := name.ParseReference(reg.Host() + "/acme/hello:1.0.0")
	if err := remote.Write(ref, img, remote.WithTransport(tr), remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password})); err != nil {
		b.Fatal(err)
	}
	src := filepath.Join(dir, "fleet")
	if err := testenv.CopyDir(filepath.Join(testenv.ModuleRoot(b), "examples", "compose-hello"), src); err != nil {
		b.Fatal(err)
	}
	compose := filepath.Join(src, "apps", "web", "compose.yaml")
	cb, _ := os.ReadFile(compose)
	if err := os.WriteFile(compose, []byte(strings.ReplaceAll(string(cb), "127.0.0.1:5000/acme/hello:1.0.0", reg.Host()+"/acme/hello:1.0.0")), 0o644); err != nil {
		b.Fatal(err)
	}
	repo := testenv.GitRepo(b, src)
	baseState, _ := os.ReadFile(filepath.Join(repo, "berth.yaml"))
	push := func(created time.Time, plan string) string {
		b.Helper()
		if err := os.WriteFile(filepath.Join(repo, "berth.yaml"), append(slices.Clone(baseState), plan...), 0o644); err != nil {
			b.Fatal(err)
		}
		testenv.GitCommitAll(b, repo, testenv.GitOptions{Time: created, Message: created.String()})
		out := run("push", repo, "oci://"+reg.Host()+"/fleet/line-3:stable", "--sign-key", prefix+".key", "--output", "json")
		var res struct{ Digest string }
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.Digest == "" {
			b.Fatalf("push printed no digest: %v %s", err, out)
		}
		return res.Digest
	}
	d0 := push(time.Now().Add(-time.Hour).Truncate(time.Second), "")

	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	type device struct {
		id, state, wave string
		adopted         time.Time
	}
	devs := make([]*device, n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	done := make(chan struct{}, n)
	for i := range devs {
		d := &device{id: fmt.Sprintf("d%04d", i), wave: "all"}
		labels := "{}"
		if i%(n/10) == 0 && i/(n/10) < 10 {
			labels, d.wave = "{ring: canary}", "canary"
		} else if bucketOf("fleet/line-3", d.id) < 1000 {
			d.wave = "early"
		}
		d.state = filepath.Join(dir, d.id, "state")
		path := filepath.Join(dir, d.id, "agent.yaml")
		cfgText := fmt.Sprintf(`stateDir: %s
device: {id: %s, labels: %s}
sources:
  - name: line-3
    url: oci://%s/fleet/line-3
    ref: {tag: stable}
    interval: %s
    timeout: 60s
    verify: {keys: [%s]}
    credentials: {dockerConfig: %s}
    caFile: %s
`, d.state, d.id, labels, reg.Host(), interval, prefix+".pub", reg.DockerConfig, reg.CAFile)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(cfgText), 0o600); err != nil {
			b.Fatal(err)
		}
		cfg, err := config.Load(path)
		if err != nil {
			b.Fatal(err)
		}
		a, err := reconcile.New(cfg, reconcile.Options{Appliers: []reconcile.Applier{nopApplier{}}, Log: discard, Version: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		devs[i] = d
		go func() {
			defer func() { done <- struct{}{} }()
			_ = a.Run(ctx, nil)
		}()
		// the agents start over one interval, as a fleet's would
		time.Sleep(interval / time.Duration(n))
	}
	current := func(d *device) string {
		target, err := os.Readlink(filepath.Join(d.state, "sources", "line-3", "current"))
		if err != nil {
			return ""
		}
		return strings.Replace(filepath.Base(target), "sha256-", "sha256:", 1)
	}
	on := func(digest string) int {
		c := 0
		for _, d := range devs {
			if current(d) == digest {
				c++
			}
		}
		return c
	}
	testenv.Eventually(b, 10*time.Minute, func() bool { return on(d0) == n }, "the fleet never converged on the first release")

	// Steady state: three intervals with nothing new.
	time.Sleep(interval)
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	before := len(reg.Requests())
	start := time.Now()
	time.Sleep(3 * interval)
	reqs := reg.Requests()[before:]
	steadyDur := time.Since(start)
	steadyRate := float64(len(reqs)) / steadyDur.Seconds()
	perSecond := map[int64]int{}
	for _, r := range reqs {
		perSecond[r.Time.Unix()]++
	}
	peak := 0
	for _, c := range perSecond {
		peak = max(peak, c)
	}

	// The rollout.
	created := time.Now().Truncate(time.Second)
	before = len(reg.Requests())
	d1 := push(created, fmt.Sprintf(`rollout:
  waves:
    - {name: canary, selector: {ring: canary}}
    - {name: early, percent: 10, after: %s}
    - {name: all, percent: 100, after: %s}
`, earlyAt, allAt))
	pushed := time.Now()
	opens := map[string]time.Time{"canary": created, "early": created.Add(earlyAt), "all": created.Add(allAt)}
	early := 0
	deadline := opens["all"].Add(5 * interval)
	for on(d1) < n && time.Now().Before(deadline) {
		now := time.Now()
		for _, d := range devs {
			if d.adopted.IsZero() && current(d) == d1 {
				d.adopted = now
				if now.Before(opens[d.wave]) {
					b.Errorf("%s (wave %s) adopted before its wave opened", d.id, d.wave)
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	adopted := on(d1)
	if adopted != n {
		// reported, with the figures: an overloaded registry is a finding
		b.Errorf("%d of %d devices adopted the release %s after its last wave opened", adopted, n, deadline.Sub(opens["all"]))
	}
	time.Sleep(time.Until(opens["all"].Add(interval + interval/10)))
	rolloutReqs := len(reg.Requests()) - before
	rolloutDur := time.Since(created)
	for _, w := range []string{"canary", "early", "all"} {
		var last time.Duration
		in, took := 0, 0
		for _, d := range devs {
			if d.wave == w {
				in++
				if !d.adopted.IsZero() {
					took++
					last = max(last, d.adopted.Sub(opens[w]))
				}
				if w == "early" {
					early++
				}
			}
		}
		b.ReportMetric(last.Seconds(), "converge-"+w+"-s")
		b.Logf("wave %s: %d of %d devices adopted, the last %s after it opened", w, took, in, last.Round(time.Millisecond))
	}
	cancel()
	for range n {
		<-done
	}

	b.ReportMetric(steadyRate, "steady-req/s")
	b.ReportMetric(steadyRate*interval.Seconds()/float64(n), "steady-req/device/interval")
	b.ReportMetric(float64(peak)/math.Max(steadyRate, 1e-9), "peak-req/s-per-mean")
	b.ReportMetric(float64(rolloutReqs)/rolloutDur.Seconds(), "rollout-req/s")
	b.ReportMetric(float64(adopted)/float64(n), "adopted-fraction")
	b.ReportMetric(float64(m1.HeapInuse-m0.HeapInuse)/float64(n)/1024, "heap-KiB/device")
	b.Logf("%d devices (%d early), interval %s: steady %d requests in %s (%.1f/s, %.2f per device per interval, busiest second %d); rollout %d requests in %s (%.1f/s), the push took %s; heap %.0f KiB per device",
		n, early, interval, len(reqs), steadyDur.Round(time.Millisecond), steadyRate, steadyRate*interval.Seconds()/float64(n), peak,
		rolloutReqs, rolloutDur.Round(time.Millisecond), float64(rolloutReqs)/rolloutDur.Seconds(), pushed.Sub(created).Round(time.Millisecond),
		float64(m1.HeapInuse-m0.HeapInuse)/float64(n)/1024)
}

// bucketOf is a device's bucket by the documented formula (the first 8
// bytes of SHA-256(repository "\n" id), big-endian, modulo 10000).
func bucketOf(repo, id string) int {
	sum := sha256.Sum256([]byte(repo + "\n" + id))
	return int(binary.BigEndian.Uint64(sum[:8]) % 10000)
}
