package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

// hostileEnv is a published artifact behind a proxy that a test turns
// hostile with interceptors.
type hostileEnv struct {
	*agentEnv
	proxy  *testenv.Proxy
	digest string
	docker string
}

func newHostileEnv(t *testing.T) *hostileEnv {
	t.Helper()
	a := newAgentEnv(t)
	if err := writeRandom(filepath.Join(a.repo, "blob.bin"), 256<<10); err != nil {
		t.Fatal(err)
	}
	h := &hostileEnv{agentEnv: a, proxy: testenv.StartProxy(t, a.reg)}
	h.digest = h.publish("v1.0.0", a.key, 1)
	h.ok("tag", h.url("fleet/line-3:v1.0.0"), "stable")
	h.docker = a.reg.DockerConfigFor(t, h.proxy.Host())
	return h
}

// configure writes an agent configuration reaching the registry through
// the proxy, with a fresh state folder.
func (h *hostileEnv) configure(ref string) {
	h.t.Helper()
	h.stateDir = filepath.Join(h.t.TempDir(), "state")
	cfg := fmt.Sprintf(`stateDir: %s
sources:
  - name: line-3
    url: oci://%s/fleet/line-3
    ref: %s
    timeout: 5s
    verify: {keys: [%s]}
    credentials: {dockerConfig: %s/config.json}
    caFile: %s
`, h.stateDir, h.proxy.Host(), ref, h.pub, h.docker, h.reg.CAFile)
	h.cfgPath = filepath.Join(h.t.TempDir(), "agent.yaml")
	if err := os.WriteFile(h.cfgPath, []byte(cfg), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// onceSampled runs `berth agent --once` and returns its result and its
// peak resident memory (VmHWM, sampled until it exits).
func (h *hostileEnv) onceSampled() (result, int) {
	h.t.Helper()
	p := testenv.StartProcess(h.t, testenv.RunOptions{}, h.bin, "agent", "--config", h.cfgPath, "--once", "--output", "json")
	peak := 0
	for done := false; !done; {
		select {
		case <-p.Done():
			done = true
		case <-time.After(20 * time.Millisecond):
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid())); err == nil {
				for _, l := range strings.Split(string(b), "\n") {
					if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
						n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
						peak = max(peak, n)
					}
				}
			}
		}
	}
	var res []result
	if err := json.Unmarshal([]byte(p.Stdout()), &res); err != nil || len(res) != 1 {
		h.t.Fatalf("agent --once: %q (%v)\nstderr: %s", p.Stdout(), err, p.Stderr())
	}
	return res[0], peak
}

// maxHostilePeak bounds the agent's resident memory against any hostile
// registry (issue 11: endless tag pages took it to 1.03 GB).
const maxHostilePeak = 200 << 10 // KiB

// TestAgentHostileRegistry: a registry that answers with endless tag
// pages, a huge referrers index, thousands of bogus signatures or a body
// that trickles gets a clear error, and the agent's memory stays bounded.
func TestAgentHostileRegistry(t *testing.T) {
	h := newHostileEnv(t)
	hexd := strings.TrimPrefix(h.digest, "sha256:")
	var report []string
	check := func(name string, res result, peak int, outcome string, substrs ...string) {
		t.Helper()
		line := fmt.Sprintf("%-22s outcome %s, peak RSS %.1f MiB: %s", name, res.Outcome, float64(peak)/1024, clipErr(res.Error))
		report = append(report, line)
		t.Log(line)
		if res.Outcome != outcome {
			t.Errorf("%s: outcome %s (%s), want %s", name, res.Outcome, res.Error, outcome)
		}
		for _, s := range substrs {
			if !strings.Contains(res.Error, s) {
				t.Errorf("%s: the error does not say %q: %s", name, s, res.Error)
			}
		}
		if peak > maxHostilePeak || peak == 0 {
			t.Errorf("%s: peak RSS %d KiB, want at most %d", name, peak, maxHostilePeak)
		}
		if cur := h.current(); cur != "" {
			t.Errorf("%s: %s was applied", name, cur)
		}
	}

	// For scale: the same agent against the registry behaving.
	h.configure("{tag: stable}")
	base, basePeak := h.onceSampled()
	if base.Outcome != "applied" {
		t.Fatalf("baseline: %+v", base)
	}
	report = append(report, fmt.Sprintf("%-22s outcome %s, peak RSS %.1f MiB", "baseline (no hostility)", base.Outcome, float64(basePeak)/1024))

	t.Run("endless tag pages", func(t *testing.T) {
		var pages atomic.Int64
		h.proxy.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != "/v2/fleet/line-3/tags/list" {
				return false
			}
			n := pages.Add(1)
			tags := make([]string, 1000)
			for i := range tags {
				tags[i] = fmt.Sprintf("v0.%d.%d-%s", n, i, strings.Repeat("x", 48))
			}
			b, _ := json.Marshal(map[string]any{"name": "fleet/line-3", "tags": tags})
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Link", fmt.Sprintf(`</v2/fleet/line-3/tags/list?n=1000&last=v0.%d.999>; rel="next"`, n))
			_, _ = w.Write(b)
			return true
		})
		defer h.proxy.Intercept(nil)
		h.configure(`{semver: ">=1.0.0"}`)
		res, peak := h.onceSampled()
		check("endless tag pages", res, peak, "error", "more than 100000 tags, the cap", "limits.maxTags")
		if n := pages.Load(); n > 110 {
			t.Errorf("%d pages read for a cap of 100000 tags", n)
		}
	})

	t.Run("huge referrers index", func(t *testing.T) {
		var served atomic.Int64
		h.proxy.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodGet || r.URL.Path != "/v2/fleet/line-3/manifests/sha256-"+hexd {
				return false
			}
			w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
			_, _ = w.Write([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[`))
			entry := []byte(`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + strings.Repeat("0", 64) + `","size":1},`)
			for range (256 << 20) / len(entry) {
				n, err := w.Write(entry)
				served.Add(int64(n))
				if err != nil {
					return true
				}
			}
			_, _ = w.Write([]byte(`{}]}`))
			return true
		})
		defer h.proxy.Intercept(nil)
		h.configure("{tag: stable}")
		res, peak := h.onceSampled()
		check("huge referrers index", res, peak, "refused", "referrers index over its cap", "the cap of 4194304 bytes for a manifest or an index")
		t.Logf("the registry had sent %d MiB of the 256 MiB index when the agent hung up", served.Load()>>20)
	})

	t.Run("bogus signatures", func(t *testing.T) {
		bogus := []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{},"dsseEnvelope":{"payload":"e30=","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"AAAA"}]}}`)
		bogusDigest := digestOf(bogus)
		const n = 3000
		manifests := map[string][]byte{}
		var entries []string
		for i := range n {
			m := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","digest":%q,"size":%d}],"annotations":{"n":"%d"}}`, bogusDigest, len(bogus), i)
			d := digestOf(m)
			manifests["/v2/fleet/line-3/manifests/"+d] = m
			entries = append(entries, fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json","digest":%q,"size":%d}`, d, len(m)))
		}
		index := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` + strings.Join(entries, ",") + `]}`)
		var fetched atomic.Int64
		h.proxy.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
			switch {
			case r.URL.Path == "/v2/fleet/line-3/manifests/sha256-"+hexd:
				w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
				w.Header().Set("Docker-Content-Digest", digestOf(index))
				w.Header().Set("Content-Length", strconv.Itoa(len(index)))
				_, _ = w.Write(index)
				return true
			case manifests[r.URL.Path] != nil:
				fetched.Add(1)
				m := manifests[r.URL.Path]
				w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
				w.Header().Set("Docker-Content-Digest", strings.TrimPrefix(r.URL.Path, "/v2/fleet/line-3/manifests/"))
				w.Header().Set("Content-Length", strconv.Itoa(len(m)))
				if r.Method == http.MethodGet {
					_, _ = w.Write(m)
				}
				return true
			case r.URL.Path == "/v2/fleet/line-3/blobs/"+bogusDigest:
				w.Header().Set("Content-Length", strconv.Itoa(len(bogus)))
				w.Header().Set("Docker-Content-Digest", bogusDigest)
				if r.Method == http.MethodGet {
					_, _ = w.Write(bogus)
				}
				return true
			}
			return false
		})
		defer h.proxy.Intercept(nil)
		h.configure("{tag: stable}")
		res, peak := h.onceSampled()
		check("bogus signatures", res, peak, "refused", "too many signatures", "checked 32 signatures, the cap", "lists 3000 entries: only the first 1000", "limits.maxSignatures")
		if got := fetched.Load(); got > 2*32 {
			t.Errorf("%d bogus signature manifests fetched for a cap of 32 signatures", got)
		}
	})

	t.Run("slow body", func(t *testing.T) {
		layer := "/v2/fleet/line-3/blobs/" + h.layerDigest()
		var ranges atomic.Int64
		var slowOn atomic.Bool
		slowOn.Store(true)
		h.proxy.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != layer || r.Method != http.MethodGet {
				return false
			}
			if r.Header.Get("Range") != "" {
				ranges.Add(1)
			}
			if !slowOn.Load() {
				return false
			}
			// The layer at 10 KB/s: 256 KiB take half a minute.
			up, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, h.reg.URL()+layer, nil)
			up.SetBasicAuth(h.reg.Username, h.reg.Password)
			resp, err := h.reg.HTTPClient().Do(up)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			for _, k := range []string{"Content-Length", "Content-Type", "Docker-Content-Digest"} {
				w.Header().Set(k, resp.Header.Get(k))
			}
			w.WriteHeader(resp.StatusCode)
			buf := make([]byte, 1024)
			for {
				n, err := resp.Body.Read(buf)
				if n > 0 {
					if _, werr := w.Write(buf[:n]); werr != nil {
						return true
					}
					_ = http.NewResponseController(w).Flush()
				}
				if err != nil {
					return true
				}
				select {
				case <-r.Context().Done():
					return true
				case <-time.After(100 * time.Millisecond):
				}
			}
		})
		h.configure("{tag: stable}")
		res, peak := h.onceSampled()
		slowOn.Store(false)
		check("slow body", res, peak, "error", "context deadline exceeded")
		// What trickled in is kept, and the next reconcile resumes it.
		parts, _ := filepath.Glob(filepath.Join(h.stateDir, "downloads", "*.part"))
		if len(parts) != 1 {
			t.Fatalf("partial downloads after the slow body: %v", parts)
		}
		out, errOut, code := testenv.Run(t, h.bin, nil, "agent", "--config", h.cfgPath, "--once", "--output", "json")
		if code != 0 || !strings.Contains(out, `"applied"`) {
			t.Fatalf("after the body came back to speed: exit %d %s %s", code, out, errOut)
		}
		if ranges.Load() == 0 {
			t.Error("the download was not resumed with a Range request")
		}
		h.proxy.Intercept(nil)
	})
	for _, l := range report {
		t.Log(l)
	}
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// layerDigest is the content layer of the published artifact.
func (h *hostileEnv) layerDigest() string {
	h.t.Helper()
	var m struct {
		Layers []struct{ Digest string } `json:"layers"`
	}
	req, _ := http.NewRequest(http.MethodGet, h.reg.URL()+"/v2/fleet/line-3/manifests/"+h.digest, nil)
	req.SetBasicAuth(h.reg.Username, h.reg.Password)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := h.reg.HTTPClient().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || len(m.Layers) == 0 {
		h.t.Fatalf("manifest of %s: %v", h.digest, err)
	}
	return m.Layers[0].Digest
}
