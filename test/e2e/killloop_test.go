package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/failpoint"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/reconcile/store"
)

// killPoint is where a kill lands: a failpoint of the agent (see package
// internal/failpoint) at its n-th hit, or, for "timed", after delay.
type killPoint struct {
	name  string
	n     int
	delay time.Duration
}

func (k killPoint) String() string {
	if k.name == "timed" {
		return "kill -9 after " + k.delay.String()
	}
	return fmt.Sprintf("%s:%d", k.name, k.n)
}

// killPoints are the failpoints across a reconcile, in its order, with
// the most hits a reconcile makes of each (for the big revision).
var killPoints = []struct {
	name string
	max  int
}{
	{"oci.resolve", 1},    // resolve: the tag's HEAD
	{"oci.manifest", 2},   // the manifest by digest
	{"oci.verify", 3},     // verify: referrers, the fallback tag, .sig
	{"oci.blob", 3},       // a blob request (signature bundle, layer)
	{"oci.download", 12},  // download: a read of the layer (extraction runs beside it)
	{"fetch.extract", 1},  // extract: starting
	{"store.complete", 1}, // extract: done, before the completion record
	{"store.switch", 1},   // switch: before the rename of current
	{"store.switch.renamed", 1},
	{"reconcile.apply", 1},  // apply
	{"store.state", 1},      // recording the outcome
	{"store.gc", 1},         // GC: before taking a revision out
	{"store.gc.renamed", 1}, // GC: the revision in trash, being deleted
}

// killEnv is a registry holding a few revisions of fleet/line-3 (big and
// small) and an agent configuration tracking its stable tag.
type killEnv struct {
	*agentEnv
	fpBin string            // berth-agent built with failpoints
	revs  []string          // digests, rev-0 ...
	refs  map[string]string // digest -> folder of a fresh berth pull
}

func newKillEnv(t *testing.T) *killEnv {
	t.Helper()
	k := &killEnv{agentEnv: newAgentEnv(t), fpBin: testenv.BuildAgentFailpoints(t), refs: map[string]string{}}
	// rev-0 small, rev-1 big (100 files and 1 MiB that do not compress),
	// rev-2 small, rev-3 big with other content.
	big := filepath.Join(k.repo, "big")
	for i := range 4 {
		if i%2 == 1 {
			if err := os.MkdirAll(big, 0o755); err != nil {
				t.Fatal(err)
			}
			for f := range 100 {
				p := filepath.Join(big, fmt.Sprintf("d%02d", f/25), fmt.Sprintf("f%03d.txt", f))
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, fmt.Appendf(nil, "revision %d file %d\n", i, f), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := writeRandom(filepath.Join(big, "random.bin"), 1<<20); err != nil {
				t.Fatal(err)
			}
		} else if err := os.RemoveAll(big); err != nil {
			t.Fatal(err)
		}
		k.revs = append(k.revs, k.publish(fmt.Sprintf("rev-%d", i), k.key, i+1))
	}
	k.stateDir = filepath.Join(t.TempDir(), "state")
	k.writeConfig("ref: {tag: stable}", "keepRevisions: 1", "allowDowngrade: true")
	return k
}

// point moves stable to digest, as CI would.
func (k *killEnv) point(digest string) {
	testenv.SeedTags(k.t, k.reg, "fleet/line-3", digest, []string{"stable"})
}

// reference returns a fresh `berth pull` of digest.
func (k *killEnv) reference(digest string) string {
	k.t.Helper()
	if dir, ok := k.refs[digest]; ok {
		return dir
	}
	dir := filepath.Join(k.t.TempDir(), "ref")
	k.ok("pull", k.url("fleet/line-3@"+digest), "-o", dir, "--key", k.pub)
	k.refs[digest] = dir
	return dir
}

// kill runs one reconcile of the agent killed at p; it reports whether the
// kill landed (the agent did not finish).
func (k *killEnv) kill(p killPoint) bool {
	k.t.Helper()
	args := []string{"--config", k.cfgPath, "--once", "--output", "json"}
	if p.name != "timed" {
		_, errOut, code := testenv.RunWith(k.t, testenv.RunOptions{Env: []string{failpoint.Env + "=" + p.String()}}, k.fpBin, args...)
		return code != 0 && strings.Contains(errOut, "failpoint "+p.String())
	}
	proc := testenv.StartProcess(k.t, testenv.RunOptions{}, k.fpBin, args...)
	select {
	case <-proc.Done():
		return false
	case <-time.After(p.delay):
	}
	_ = proc.Signal(syscall.SIGKILL)
	proc.Wait(10 * time.Second)
	return strings.Contains(proc.Stdout(), "[") == false
}

// converge restarts the agent and checks that it applies want, byte for
// byte what a fresh pull of want gives, with a clean store.
func (k *killEnv) converge(want string, what string) {
	k.t.Helper()
	res, code := k.once()
	if code != 0 || (res.Outcome != "applied" && res.Outcome != "unchanged") || res.Digest != want {
		k.t.Fatalf("%s: the restart gave %+v (exit %d), want %s applied", what, res, code, want)
	}
	if cur := k.current(); cur != want {
		k.t.Fatalf("%s: current is %s after the restart, want %s", what, cur, want)
	}
	st, err := store.ReadState(k.stateDir)
	if err != nil {
		k.t.Fatalf("%s: %v", what, err)
	}
	if ss := st.Sources["line-3"]; ss == nil || ss.Applied == nil || ss.Applied.Digest != want {
		k.t.Fatalf("%s: state.json records %+v, want %s applied", what, ss, want)
	}
	dir, err := filepath.EvalSymlinks(filepath.Join(k.stateDir, "sources", "line-3", "current"))
	if err != nil {
		k.t.Fatalf("%s: %v", what, err)
	}
	got, wantTree := tree(k.t, dir), tree(k.t, k.reference(want))
	if len(wantTree) == 0 {
		k.t.Fatalf("%s: the reference pull of %s is empty", what, want)
	}
	if !maps.Equal(got, wantTree) {
		var diff []string
		for p := range maps.Keys(wantTree) {
			if got[p] != wantTree[p] {
				diff = append(diff, p+": "+got[p]+" != "+wantTree[p])
			}
		}
		for p := range maps.Keys(got) {
			if _, ok := wantTree[p]; !ok {
				diff = append(diff, p+" (extra)")
			}
		}
		slices.Sort(diff)
		k.t.Fatalf("%s: the applied revision differs from a fresh pull of %s: %d of %d entries, such as %v", what, want, len(diff), len(wantTree), diff[:min(5, len(diff))])
	}
	// The store holds complete revisions only: each with its record, no
	// partial extraction, nothing in the trash.
	entries, _ := os.ReadDir(filepath.Join(k.stateDir, "revisions"))
	for _, e := range entries {
		switch n := e.Name(); {
		case strings.Contains(n, ".tmp"):
			k.t.Fatalf("%s: partial extraction %s left", what, n)
		case e.IsDir():
			if _, err := os.Stat(filepath.Join(k.stateDir, "revisions", n+".complete")); err != nil {
				k.t.Fatalf("%s: revision %s has no completion record", what, n)
			}
		}
	}
	if trash, _ := os.ReadDir(filepath.Join(k.stateDir, "trash")); len(trash) > 0 {
		k.t.Fatalf("%s: %d entries left in trash", what, len(trash))
	}
}

// tree describes every entry below dir: type, mode and content hash, or a
// symlink's target.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "link " + target
		case d.IsDir():
			out[rel] = "dir " + fi.Mode().Perm().String()
		default:
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			out[rel] = "file " + fi.Mode().Perm().String() + " " + hex.EncodeToString(h.Sum(nil))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return out
}

// TestAgentKillLoop kills the agent binary with SIGKILL at seeded points
// across resolve, verify, download, extract, switch, apply and garbage
// collection, at least 50 times, starting with the GC case of issue 11
// (a big revision collected by a kill, applied again later). After every
// kill the agent is restarted and must converge to the revision the tag
// names, byte for byte what a fresh `berth pull` of the recorded digest
// gives, with a clean store. The seed is printed; BERTH_CHAOS_SEED=N runs
// the same points again.
func TestAgentKillLoop(t *testing.T) {
	k := newKillEnv(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BERTH_CHAOS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("BERTH_CHAOS_SEED=%q: %v", s, err)
		}
	}
	t.Logf("kill loop seed %d (run again with BERTH_CHAOS_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	small, big := k.revs[0], k.revs[1]
	type step struct {
		target string
		at     killPoint
	}
	// The GC case: big applied, then small, killed while big is being
	// collected, then big again.
	steps := []step{
		{big, killPoint{name: "oci.download", n: 6}},
		{small, killPoint{name: "store.gc.renamed", n: 1}}, // big half deleted
		{big, killPoint{name: "store.switch", n: 1}},       // big again: fetched whole
		{small, killPoint{name: "store.gc", n: 1}},
		{k.revs[2], killPoint{name: "store.complete", n: 1}},
	}
	want := 50
	if s := os.Getenv("BERTH_CHAOS_KILLS"); s != "" {
		want, _ = strconv.Atoi(s)
	}
	kills, runs := 0, 0
	counts := map[string]int{}
	current := ""
	deadline := time.Now().Add(6 * time.Minute)
	for i := 0; kills < want; i++ {
		if time.Now().After(deadline) || i > 3*want {
			t.Fatalf("only %d kills landed in %d runs", kills, runs)
		}
		var s step
		if i < len(steps) {
			s = steps[i]
		} else {
			others := slices.DeleteFunc(slices.Clone(k.revs), func(d string) bool { return d == current })
			s.target = others[rng.IntN(len(others))]
			if rng.IntN(5) == 0 {
				s.at = killPoint{name: "timed", delay: time.Duration(rng.IntN(1500)) * time.Millisecond}
			} else {
				// Downloads are drawn twice as often: they are the longest
				// step.
				i := rng.IntN(len(killPoints) + 1)
				if i == len(killPoints) {
					i = slices.IndexFunc(killPoints, func(p struct {
						name string
						max  int
					}) bool {
						return p.name == "oci.download"
					})
				}
				p := killPoints[i]
				s.at = killPoint{name: p.name, n: 1 + rng.IntN(p.max)}
			}
		}
		k.point(s.target)
		runs++
		landed := k.kill(s.at)
		if landed {
			kills++
			counts[s.at.name]++
		}
		what := fmt.Sprintf("run %d (%s, target %s, kill landed %v)", runs, s.at, s.target[:19], landed)
		k.converge(s.target, what)
		current = s.target
		t.Logf("%s: converged", what)
	}
	t.Logf("kill loop seed %d: %d/%d kills converged byte-identical (%d runs); kills by point: %v", seed, kills, kills, runs, counts)
}
