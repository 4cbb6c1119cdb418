package reconcile

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/berth-dev/berth/policy/rollout"
	"github.com/berth-dev/berth/policy/rollout/statement"
	"github.com/berth-dev/berth/reconcile/config"
	"github.com/berth-dev/berth/source/oci"
)

// planYAML is the plan of the issue: a canary ring, then 10 %, then
// everyone a day after the release's created time.
const planYAML = `rollout:
  waves:
    - {name: canary, selector: {ring: canary}}
    - {name: early, percent: 10, after: 2h}
    - {name: all, percent: 100, after: 24h}
`

// withPlan returns files holding berthYAML with planYAML, and its Compose
// project.
func withPlan() map[string]string {
	m := withState(nil)
	m["berth.yaml"] = berthYAML + planYAML
	return m
}

// bucketOf computes a device's bucket from the documented formula (the
// first 8 bytes of SHA-256(repository "\n" id), big-endian, modulo 10000),
// without the code under test.
func bucketOf(repo, id string) int {
	sum := sha256.Sum256([]byte(repo + "\n" + id))
	return int(binary.BigEndian.Uint64(sum[:8]) % 10000)
}

// idIn returns a device id of the form prefix-N whose bucket in repo is in
// [lo, hi).
func idIn(repo, prefix string, lo, hi int) string {
	for i := 0; ; i++ {
		id := fmt.Sprintf("%s-%d", prefix, i)
		if b := bucketOf(repo, id); b >= lo && b < hi {
			return id
		}
	}
}

// device is one agent of a fleet in a test: its configuration, agent and
// applier.
type device struct {
	name string
	id   string // set by wavesFleet
	cfg  *config.Config
	a    *Agent
	rec  *recorder
}

// device makes an agent named name (its files in a folder of that name)
// with the given device block, tracking fleet/app:stable every interval,
// on the clock clk; extra are more YAML lines of the source.
func (e *env) device(name, deviceYAML string, clk *fakeClock, interval time.Duration, extra string) *device {
	e.t.Helper()
	cfg := e.configIn(filepath.Join(e.dir, name), deviceYAML, src{name: "app", repo: "fleet/app",
		extra: fmt.Sprintf("    interval: %s\n%s", interval, extra)})
	rec := newRecorder()
	a := newAgentWith(e.t, cfg, clk, rec)
	rec.attach(a)
	return &device{name: name, cfg: cfg, a: a, rec: rec}
}

// wavesFleet makes a device of each wave of planYAML on clk: a canary
// (id c-1, ring: canary), one whose bucket is in the first 10 % (wave
// early) and one whose bucket is not (wave all).
func (e *env) wavesFleet(clk *fakeClock, interval time.Duration) (canary, early, late *device) {
	mk := func(name, id, labels string) *device {
		d := e.device(name, "device: {id: "+id+labels+"}", clk, interval, "")
		d.id = id
		return d
	}
	return mk("canary", "c-1", ", labels: {ring: canary}"),
		mk("early", idIn("fleet/app", "dev", 0, 1000), ""),
		mk("late", idIn("fleet/app", "dev", 1000, 10000), "")
}

// poll runs one poll of the device's source.
func (d *device) poll() apiResult { return poll(d.a, "app")[0] }

// expect polls and checks the outcome and digest, and that nothing else
// than want runs.
func (d *device) expect(t *testing.T, outcome, digest, current string) apiResult {
	t.Helper()
	res := d.poll()
	if res.Outcome != outcome || (digest != "" && res.Digest != digest) {
		t.Fatalf("%s: poll = %+v, want %s %s", d.name, res, outcome, short(digest))
	}
	if got := d.current(t); got != current {
		t.Fatalf("%s: current = %s after %s, want %s", d.name, short(got), outcome, short(current))
	}
	return res
}

func (d *device) current(t *testing.T) string { return current(t, d.a, "app") }

// sign signs a rollout statement about repo@digest with sv and attaches it.
func (e *env) statement(sv signature.SignerVerifier, repo, digest string, a rollout.Action, signedAt time.Time, reason string) {
	e.t.Helper()
	nd := e.digestName(repo, digest)
	st := statement.Statement{Action: a, Digest: digest, SignedAt: signedAt, Reason: reason}
	if err := statement.Sign(context.Background(), nd, st, sv, e.client.RemoteOptions(context.Background())...); err != nil {
		e.t.Fatalf("sign %s statement: %v", a, err)
	}
}

func (e *env) digestName(repo, digest string) name.Digest {
	e.t.Helper()
	nd, err := e.client.Name(oci.Reference{Registry: e.host, Repository: repo, Digest: digest})
	if err != nil {
		e.t.Fatal(err)
	}
	return nd
}

// stranger is a signing key the devices do not trust.
func stranger(t *testing.T) signature.SignerVerifier {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := signature.LoadDefaultSignerVerifier(priv)
	if err != nil {
		t.Fatal(err)
	}
	return sv
}

// copyStatements re-attaches every statement of repo@from to repo@to,
// bytes unchanged: anyone with push access replaying a release's
// statements on another. It returns how many it copied.
func (e *env) copyStatements(repo, from, to string) int {
	e.t.Helper()
	ropts := e.client.RemoteOptions(context.Background())
	fd, td := e.digestName(repo, from), e.digestName(repo, to)
	idx, err := remote.Referrers(fd, append(ropts, remote.WithReferrersTagFallback(true))...)
	if err != nil {
		e.t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	subject, err := remote.Head(td, ropts...)
	if err != nil {
		e.t.Fatal(err)
	}
	n := 0
	for _, d := range im.Manifests {
		if d.Annotations["dev.sigstore.bundle.predicateType"] != statement.PredicateType {
			continue
		}
		got, err := remote.Get(fd.Context().Digest(d.Digest.String()), ropts...)
		if err != nil {
			e.t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(got.Manifest, &m); err != nil {
			e.t.Fatal(err)
		}
		m["subject"] = map[string]any{"mediaType": subject.MediaType, "digest": subject.Digest.String(), "size": subject.Size}
		raw, _ := json.Marshal(m)
		h, _, _ := v1.SHA256(bytes.NewReader(raw))
		if err := remote.Put(td.Context().Digest(h.String()), rawManifest(raw), ropts...); err != nil {
			e.t.Fatal(err)
		}
		n++
	}
	return n
}

// forgedStatement attaches to repo@digest a statement bundle whose
// signature is garbage: an unsigned statement.
func (e *env) forgedStatement(repo, digest string, a rollout.Action, signedAt time.Time) {
	e.t.Helper()
	hex := strings.TrimPrefix(digest, "sha256:")
	pred, _ := json.Marshal(statement.Statement{Action: a, Digest: digest, SignedAt: signedAt})
	stmt, _ := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"digest": map[string]string{"sha256": hex}}},
		"predicateType": statement.PredicateType,
		"predicate":     json.RawMessage(pred),
	})
	bundle, _ := json.Marshal(map[string]any{
		"mediaType":            "application/vnd.dev.sigstore.bundle.v0.3+json",
		"verificationMaterial": map[string]any{"publicKey": map[string]any{"hint": "forged"}},
		"dsseEnvelope": map[string]any{
			"payload": stmt, "payloadType": "application/vnd.in-toto+json",
			"signatures": []any{map[string]any{"sig": []byte("not a signature")}},
		},
	})
	if err := statement.Attach(context.Background(), e.digestName(repo, digest), bundle, e.client.RemoteOptions(context.Background())...); err != nil {
		e.t.Fatalf("attach a forged statement: %v", err)
	}
}

// rawManifest is a remote.Taggable for hand-made manifests.
type rawManifest []byte

func (r rawManifest) RawManifest() ([]byte, error)        { return r, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
