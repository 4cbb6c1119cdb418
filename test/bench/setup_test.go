// Package bench measures berth against a peer tool in the same run and
// reports the figures with b.ReportMetric; it asserts correctness, never
// timings. Run it with `make bench`:
//
//	go test -run='^$' -bench=. -benchtime=1x -timeout 60m ./test/bench/
//
// The registry is Debian's docker-registry with TLS and htpasswd (started
// by internal/testenv), the peer tool is crane from go-containerregistry,
// built from the version in go.mod. The benchmarks need about 4 GiB of
// free disk in the temp dir at their peak and remove everything they made.
package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

const (
	// keyPassword protects the signing key the benchmarks generate.
	keyPassword = "bench-key-password"
	// maxSize is passed to berth pull as --max-size: the 1 GiB artifact is
	// over the default cap of 1 GiB once tar headers are counted.
	maxSize = 2 << 30
	// cmdTimeout bounds every command a benchmark runs.
	cmdTimeout = 20 * time.Minute
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBuildDir()
	if craneBuild.dir != "" {
		os.RemoveAll(craneBuild.dir)
	}
	os.Exit(code)
}

var craneBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// buildCrane builds crane from the go-containerregistry module in go.mod's
// graph, once per process.
func buildCrane(b *testing.B) string {
	b.Helper()
	craneBuild.once.Do(func() {
		dir, err := os.MkdirTemp("", "berth-bench-crane-")
		if err != nil {
			craneBuild.err = err
			return
		}
		craneBuild.dir = dir
		craneBuild.path = filepath.Join(dir, "crane")
		cmd := exec.Command("go", "build", "-o", craneBuild.path, "github.com/google/go-containerregistry/cmd/crane")
		cmd.Dir = testenv.ModuleRoot(b)
		if out, err := cmd.CombinedOutput(); err != nil {
			craneBuild.err = fmt.Errorf("go build crane: %v\n%s", err, out)
		}
	})
	if craneBuild.err != nil {
		b.Fatal(craneBuild.err)
	}
	return craneBuild.path
}

// env is a registry with TLS and auth, the berth and crane binaries and a
// signing key pair.
type env struct {
	b     *testing.B
	berth string
	crane string
	reg   *testenv.Registry
	key   string // cosign.key
	pub   string // cosign.pub
}

func newEnv(b *testing.B) *env {
	b.Helper()
	e := &env{
		b:     b,
		berth: testenv.BuildBerth(b),
		crane: buildCrane(b),
		reg:   testenv.StartRegistry(b, testenv.RegistryOptions{}),
	}
	prefix := filepath.Join(b.TempDir(), "cosign")
	e.run(nil, "generate-key", "--prefix", prefix)
	e.key, e.pub = prefix+".key", prefix+".pub"
	return e
}

// environ is what every berth and crane run gets on top of the test's
// environment.
func (e *env) environ(extra ...string) []string {
	return append(append(os.Environ(),
		"DOCKER_CONFIG="+e.reg.DockerConfigDir,
		"COSIGN_PASSWORD="+keyPassword,
	), extra...)
}

// run runs berth with the registry's CA and fails the benchmark unless it
// exits 0; it returns stdout and berth's peak memory.
func (e *env) run(extraEnv []string, args ...string) (string, peakMem) {
	e.b.Helper()
	cmd := exec.Command(e.berth, append(args, "--ca-file", e.reg.CAFile)...)
	cmd.Env = e.environ(extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	peak, err := runSampled(cmd)
	if err != nil {
		e.b.Fatalf("berth %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), clip(stderr.String()))
	}
	return stdout.String(), peak
}

// peakMem is a command's peak memory in MiB, sampled from /proc while it
// runs: VmHWM (peak resident set) and the peak of RssAnon (heap and
// stacks; the rest of the resident set is the binary's file-backed
// pages). The rusage maxrss of a child is not used: Go starts children
// with vfork (CLONE_VM), so a child's maxrss includes the parent's (this
// benchmark binary's) high-water mark.
type peakMem struct{ hwm, anon float64 }

// runSampled starts cmd, samples its memory every 20 ms until it exits
// (killing it after cmdTimeout), and returns the peaks. VmHWM is the
// kernel's own high-water mark, so sampling misses at most the last 20 ms.
func runSampled(cmd *exec.Cmd) (peakMem, error) {
	if err := cmd.Start(); err != nil {
		return peakMem{}, err
	}
	var peak peakMem
	done, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if m, ok := procMem(cmd.Process.Pid); ok {
				peak.hwm, peak.anon = max(peak.hwm, m.hwm), max(peak.anon, m.anon)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	timer := time.AfterFunc(cmdTimeout, func() { _ = cmd.Process.Kill() })
	err := cmd.Wait()
	timer.Stop()
	close(done)
	<-sampled
	return peak, err
}

// procMem reads VmHWM and RssAnon of a running process, in MiB.
func procMem(pid int) (peakMem, bool) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return peakMem{}, false
	}
	var m peakMem
	found := 0
	for _, line := range strings.Split(string(raw), "\n") {
		for field, dst := range map[string]*float64{"VmHWM:": &m.hwm, "RssAnon:": &m.anon} {
			if rest, ok := strings.CutPrefix(line, field); ok {
				kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
				if err == nil {
					*dst = kb / 1024
					found++
				}
			}
		}
	}
	return m, found == 2
}

func runWithTimeout(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	t := time.AfterFunc(cmdTimeout, func() { _ = cmd.Process.Kill() })
	defer t.Stop()
	return cmd.Wait()
}

// artifact is a pushed and signed berth artifact.
type artifact struct {
	url   string // oci://HOST/REPO:TAG
	repo  string // HOST/REPO
	tag   string // TAG
	layer string // digest of the content layer
	files int    // regular files in it
	size  int64  // their total size
}

// pushArtifact makes a Git repository holding a berth.yaml and files of
// fileSize incompressible random bytes (total bytes in all), pushes it with
// berth push --sign-key to bench/NAME:v1 and removes the repository again.
// The data is generated straight to disk, never held in memory.
func (e *env) pushArtifact(name string, total, fileSize int64) artifact {
	e.b.Helper()
	start := time.Now()
	src := filepath.Join(e.b.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		e.b.Fatal(err)
	}
	state := "apiVersion: berth.dev/v1\nkind: DeviceState\napps: []\n"
	if err := os.WriteFile(filepath.Join(src, "berth.yaml"), []byte(state), 0o644); err != nil {
		e.b.Fatal(err)
	}
	// The data goes into the repository directly (no copy), then one
	// commit takes it.
	repo := testenv.GitRepo(e.b, src)
	files := 0
	var seed [32]byte
	copy(seed[:], name)
	rng := rand.NewChaCha8(seed)
	for written := int64(0); written < total; files++ {
		n := min(fileSize, total-written)
		if err := writeRandomFile(filepath.Join(repo, "data", fmt.Sprintf("blob-%04d.bin", files)), n, rng); err != nil {
			e.b.Fatal(err)
		}
		written += n
	}
	testenv.GitCommitAll(e.b, repo, testenv.GitOptions{Message: "bench data"})
	generated := time.Since(start)

	start = time.Now()
	out, _ := e.run([]string{"TMPDIR=" + e.b.TempDir()},
		"push", repo, "oci://"+e.reg.Host()+"/bench/"+name+":v1", "--sign-key", e.key, "--output", "json")
	var res struct {
		Repository string `json:"repository"`
		Digest     string `json:"digest"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Digest == "" {
		e.b.Fatalf("berth push --output json: %v\n%s", err, out)
	}
	pushed := time.Since(start)
	// Only the registry's copy is needed from here on.
	if err := os.RemoveAll(repo); err != nil {
		e.b.Fatal(err)
	}
	a := artifact{
		url:   "oci://" + e.reg.Host() + "/bench/" + name + ":v1",
		repo:  res.Repository,
		tag:   "v1",
		layer: e.contentLayer("bench/"+name, res.Digest),
		files: files + 2, // the data, berth.yaml and berth.lock.json
		size:  total,
	}
	e.b.Logf("artifact %s: %d MiB in %d files, generated and committed in %s, pushed in %s; layer %s",
		name, total>>20, files, generated.Round(time.Millisecond), pushed.Round(time.Millisecond), a.layer)
	return a
}

func writeRandomFile(path string, size int64, rng io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.CopyBuffer(f, io.LimitReader(rng, size), make([]byte, 1<<20))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// contentLayer returns the digest of the one layer of the manifest.
func (e *env) contentLayer(repo, digest string) string {
	e.b.Helper()
	req, err := http.NewRequest(http.MethodGet, e.reg.URL()+"/v2/"+repo+"/manifests/"+digest, nil)
	if err != nil {
		e.b.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	req.SetBasicAuth(e.reg.Username, e.reg.Password)
	resp, err := e.reg.HTTPClient().Do(req)
	if err != nil {
		e.b.Fatal(err)
	}
	defer resp.Body.Close()
	var m struct {
		Layers []struct {
			Digest string `json:"digest"`
		} `json:"layers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != http.StatusOK || len(m.Layers) != 1 {
		e.b.Fatalf("manifest %s@%s: %s, %v, %+v", repo, digest, resp.Status, err, m)
	}
	return m.Layers[0].Digest
}

// verifyRSS runs berth verify (resolve, verify the signature, no pull) and
// returns its peak RSS in MiB.
func (e *env) verifyRSS(a artifact) float64 {
	e.b.Helper()
	_, peak := e.run(nil, "verify", a.url, "--key", e.pub)
	return peak.hwm
}

// pullBerth runs berth pull (resolve, verify, stream, extract) into a new
// dir, checks what arrived and removes it. It returns the wall time and
// berth's peak RSS in MiB.
func (e *env) pullBerth(a artifact) (time.Duration, float64) {
	e.b.Helper()
	dir := filepath.Join(e.b.TempDir(), "berth-out")
	start := time.Now()
	_, peak := e.run(nil, "pull", a.url, "-o", dir, "--key", e.pub, "--max-size", strconv.Itoa(maxSize))
	elapsed := time.Since(start)
	e.checkAndRemove(dir, a)
	return elapsed, peak.hwm
}

// Peer pipelines for pullCrane. Both check the layer digest (crane does)
// but no signature.
const (
	// craneBlob fetches the layer blob and lets GNU tar and gzip unpack it.
	craneBlob = `"$CRANE" blob "$REPO@$LAYER" | tar -xzf - -C "$DIR"`
	// craneExport resolves the tag and lets crane decompress (Go's gzip,
	// as berth) and flatten the layers, then tar unpacks: issue 3's
	// "crane export … | tar -x".
	craneExport = `"$CRANE" export "$REPO:$TAG" - | tar -xf - -C "$DIR"`
)

// pullCrane runs one of the crane pipelines into a new dir with bash's
// pipefail, checks what arrived and removes it. It returns the wall time
// of the pipeline, and separately the time to fsync what tar wrote (which
// berth does before it returns, and tar does not).
func (e *env) pullCrane(a artifact, pipeline string) (elapsed, fsyncTime time.Duration) {
	e.b.Helper()
	dir := filepath.Join(e.b.TempDir(), "crane-out")
	if err := os.Mkdir(dir, 0o755); err != nil {
		e.b.Fatal(err)
	}
	cmd := exec.Command("bash", "-c", "set -o pipefail; "+pipeline)
	cmd.Env = e.environ("CRANE="+e.crane, "REPO="+a.repo, "TAG="+a.tag, "LAYER="+a.layer, "DIR="+dir, "SSL_CERT_FILE="+e.reg.CAFile)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := runWithTimeout(cmd)
	elapsed = time.Since(start)
	if err != nil {
		e.b.Fatalf("%s: %v\n%s", pipeline, err, clip(out.String()))
	}
	start = time.Now()
	if err := fsyncTree(dir); err != nil {
		e.b.Fatal(err)
	}
	fsyncTime = time.Since(start)
	e.checkAndRemove(dir, a)
	return elapsed, fsyncTime
}

// checkAndRemove checks that dir holds the artifact's files and sizes, then
// removes it.
func (e *env) checkAndRemove(dir string, a artifact) {
	e.b.Helper()
	files, size := 0, int64(0)
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		files++
		size += info.Size()
		return nil
	})
	if err != nil {
		e.b.Fatal(err)
	}
	// berth.yaml and berth.lock.json are a few hundred bytes.
	if files != a.files || size < a.size || size > a.size+64<<10 {
		e.b.Fatalf("%s holds %d files, %d bytes; want %d files, %d bytes of data", dir, files, size, a.files, a.size)
	}
	if err := os.RemoveAll(dir); err != nil {
		e.b.Fatal(err)
	}
}

// fsyncTree fsyncs every file and directory under dir.
func fsyncTree(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !(d.IsDir() || d.Type().IsRegular()) {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	})
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func clip(s string) string {
	const max = 8 << 10
	if len(s) <= max {
		return s
	}
	return "..." + s[len(s)-max:]
}
