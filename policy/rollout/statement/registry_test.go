package statement

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/berth-dev/berth/internal/keylesstest"
	"github.com/berth-dev/berth/internal/signtest"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/policy/rollout"
)

// key is a signing key and the cosign.Key that verifies it.
type key struct {
	sv  signature.SignerVerifier
	pub cosign.Key
}

func newKey(t testing.TB, name string) key {
	t.Helper()
	sk := signtest.NewKey(t)
	k, err := cosign.ParsePublicKey(name, sk.PublicPEM)
	if err != nil {
		t.Fatal(err)
	}
	return key{sv: sk.Signer, pub: k}
}

// target is a registry to run the scenarios against.
type target struct {
	host  string
	ropts []remote.Option
	nopts []name.Option
}

var repoSeq atomic.Int64

// release pushes a random image as a release and returns its digest.
func (tg target) release(t testing.TB) name.Digest {
	t.Helper()
	repo, err := name.NewRepository(fmt.Sprintf("%s/fleet/line%d", tg.host, repoSeq.Add(1)), tg.nopts...)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := signtest.PushRandom(t, repo.Tag("v1"), tg.ropts...)
	return d
}

func inProcess(t *testing.T, referrers bool) target {
	t.Helper()
	return target{host: signtest.Registry(t, referrers)}
}

// rawManifest is a remote.Taggable for hand-made manifests.
type rawManifest []byte

func (r rawManifest) RawManifest() ([]byte, error)        { return r, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

// putReferrer pushes, as a referrer of subject, a manifest annotated as a
// statement whose single layer is content: what anyone with push access
// can do.
func (tg target) putReferrer(t *testing.T, subject name.Digest, content []byte, mutate func(m map[string]any)) {
	t.Helper()
	repo := subject.Context()
	cfg := static.NewLayer([]byte("{}"), types.OCIConfigJSON)
	layer := static.NewLayer(content, "application/vnd.dev.sigstore.bundle.v0.3+json")
	for _, l := range []v1.Layer{cfg, layer} {
		if err := remote.WriteLayer(repo, l, tg.ropts...); err != nil {
			t.Fatal(err)
		}
	}
	desc, err := remote.Head(subject, tg.ropts...)
	if err != nil {
		t.Fatal(err)
	}
	cd, _ := cfg.Digest()
	ld, _ := layer.Digest()
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     types.OCIManifestSchema1,
		"artifactType":  "application/vnd.dev.sigstore.bundle.v0.3+json",
		"config":        map[string]any{"mediaType": "application/vnd.oci.empty.v1+json", "digest": cd.String(), "size": 2},
		"layers":        []any{map[string]any{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "digest": ld.String(), "size": len(content)}},
		"subject":       map[string]any{"mediaType": desc.MediaType, "digest": desc.Digest.String(), "size": desc.Size},
		"annotations":   map[string]any{predicateAnnotation: PredicateType, createdAnnotation: time.Now().UTC().Format(time.RFC3339Nano)},
	}
	if mutate != nil {
		mutate(m)
	}
	raw, _ := json.Marshal(m)
	h, _, _ := v1.SHA256(bytes.NewReader(raw))
	if err := remote.Put(repo.Digest(h.String()), rawManifest(raw), tg.ropts...); err != nil {
		t.Fatal(err)
	}
}

// copyStatements re-attaches every statement referrer of from to to,
// bytes unchanged: an attacker replaying a release's statements on another.
func (tg target) copyStatements(t *testing.T, from, to name.Digest) int {
	t.Helper()
	idx, err := remote.Referrers(from, tg.ropts...)
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	n := 0
	for _, d := range im.Manifests {
		if d.Annotations[predicateAnnotation] != PredicateType {
			continue
		}
		got, err := remote.Get(from.Context().Digest(d.Digest.String()), tg.ropts...)
		if err != nil {
			t.Fatal(err)
		}
		var m v1.Manifest
		if err := json.Unmarshal(got.Manifest, &m); err != nil {
			t.Fatal(err)
		}
		l, err := remote.Layer(from.Context().Digest(m.Layers[0].Digest.String()), tg.ropts...)
		if err != nil {
			t.Fatal(err)
		}
		rc, _ := l.Compressed()
		b, _ := io.ReadAll(rc)
		rc.Close()
		tg.putReferrer(t, to, b, nil)
		n++
	}
	return n
}

// scenario signs, attaches and reads statements on tg: the newest valid
// one wins, and unsigned, wrongly signed, copied and malformed ones are
// ignored and reported.
func scenario(t *testing.T, tg target) {
	ctx := context.Background()
	a, b := tg.release(t), tg.release(t)
	ci, stranger := newKey(t, "ci.pub"), newKey(t, "stranger.pub")
	policy := cosign.Policy{Keys: []cosign.Key{ci.pub}}
	t0 := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)

	read := func(d name.Digest, o Options) *Result {
		t.Helper()
		r, err := Read(ctx, d, policy, o, tg.ropts...)
		if err != nil {
			t.Fatalf("Read(%s): %v", d, err)
		}
		return r
	}
	if r := read(a, Options{}); r.Latest != nil || r.Action() != rollout.None || len(r.Ignored) != 0 {
		t.Fatalf("no statement yet: %+v", r)
	}

	sign := func(d name.Digest, k key, act rollout.Action, at time.Duration) {
		t.Helper()
		s := Statement{Action: act, Digest: d.DigestStr(), SignedAt: t0.Add(at), Reason: "test " + string(act)}
		if err := Sign(ctx, d, s, k.sv, tg.ropts...); err != nil {
			t.Fatalf("Sign %s: %v", act, err)
		}
	}
	sign(a, ci, rollout.Pause, time.Minute)
	sign(a, ci, rollout.Resume, 2*time.Minute)
	sign(a, ci, rollout.Abort, 0) // older: loses
	r := read(a, Options{})
	if r.Action() != rollout.Resume || len(r.Valid) != 3 || r.Latest.Signer != "key ci.pub" || r.Latest.Reason != "test resume" {
		t.Fatalf("three signed statements: latest %+v, %d valid, ignored %+v", r.Latest, len(r.Valid), r.Ignored)
	}
	if acts := []rollout.Action{r.Valid[0].Action, r.Valid[1].Action, r.Valid[2].Action}; !slices.Equal(acts, []rollout.Action{rollout.Resume, rollout.Pause, rollout.Abort}) {
		t.Errorf("valid order = %v, want newest first", acts)
	}

	// A newer statement by a stranger, a newer unsigned one and garbage
	// change nothing, and are reported.
	sign(a, stranger, rollout.Abort, time.Hour)
	unsigned, _ := cosign.StatementPayload(a, PredicateType, mustPredicate(t, Statement{Action: rollout.Abort, Digest: a.DigestStr(), SignedAt: t0.Add(2 * time.Hour)}))
	tg.putReferrer(t, a, []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","dsseEnvelope":{"payload":"`+b64(unsigned)+`","payloadType":"application/vnd.in-toto+json","signatures":[]}}`), nil)
	tg.putReferrer(t, a, []byte("not json"), nil)
	r = read(a, Options{})
	if r.Action() != rollout.Resume || len(r.Ignored) != 3 {
		t.Fatalf("after untrusted statements: latest %+v, ignored %+v", r.Latest, r.Ignored)
	}
	reasons := ""
	for _, ig := range r.Ignored {
		reasons += ig.Reason + "\n"
	}
	if !strings.Contains(reasons, "not signed by a trusted signer") || !strings.Contains(reasons, "malformed") {
		t.Errorf("reasons:\n%s", reasons)
	}

	// b: a pause, signed for b. Copied onto a: names b, ignored as a copy.
	sign(b, ci, rollout.Pause, 3*time.Hour)
	if n := tg.copyStatements(t, b, a); n != 1 {
		t.Fatalf("copied %d statements", n)
	}
	// A statement whose subject is a but whose predicate names b, signed
	// by the trusted key: a copy too.
	mixed := mustPredicate(t, Statement{Action: rollout.Abort, Digest: b.DigestStr(), SignedAt: t0.Add(4 * time.Hour)})
	if err := cosign.Attest(ctx, a, ci.sv, PredicateType, mixed, tg.ropts...); err != nil {
		t.Fatal(err)
	}
	r = read(a, Options{})
	copies := 0
	for _, ig := range r.Ignored {
		if errors.Is(ig.Err, cosign.ErrDigestMismatch) && strings.Contains(ig.Reason, "copied") {
			copies++
		}
	}
	if r.Action() != rollout.Resume || copies != 2 {
		t.Fatalf("after copies: latest %+v, %d copies among %+v", r.Latest, copies, r.Ignored)
	}
	if rb := read(b, Options{}); rb.Action() != rollout.Pause {
		t.Errorf("b's own pause: %+v", rb.Latest)
	}
	// Sign with Sign for another digest: refused before anything is pushed.
	if err := Sign(ctx, a, Statement{Action: rollout.Pause, Digest: b.DigestStr(), SignedAt: t0}, ci.sv, tg.ropts...); err == nil {
		t.Error("Sign attached a statement about b to a")
	}

	// Bounds: only the newest MaxStatements are read; oversized ones are
	// ignored.
	all := len(r.Valid) + len(r.Ignored)
	if all != 8 {
		t.Errorf("%d statements on a, want 8", all)
	}
	if r := read(a, Options{MaxStatements: 2}); r.Skipped != all-2 || len(r.Valid)+len(r.Ignored) != 2 {
		t.Errorf("MaxStatements 2: skipped %d, read %d", r.Skipped, len(r.Valid)+len(r.Ignored))
	}
	if r := read(a, Options{MaxSize: 200}); len(r.Valid) != 0 || r.Latest != nil {
		t.Errorf("MaxSize 200: %+v", r.Latest)
	}

	// Keyless: signed in CI (a virtual Sigstore here), attached with
	// Attach, verified offline with the trusted root.
	s, err := keylesstest.New()
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := cosign.StatementPayload(b, PredicateType, mustPredicate(t, Statement{Action: rollout.Abort, Digest: b.DigestStr(), SignedAt: t0.Add(5 * time.Hour)}))
	bj, err := s.SignStatement(payload, "https://github.com/acme/fleet/.github/workflows/rollout.yml@refs/heads/main", "https://token.actions.githubusercontent.com")
	if err != nil {
		t.Fatal(err)
	}
	if err := Attach(ctx, a, bj, tg.ropts...); err == nil {
		t.Error("Attach put a statement about b on a")
	}
	if err := Attach(ctx, b, bj, tg.ropts...); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	tr, err := s.TrustedRoot()
	if err != nil {
		t.Fatal(err)
	}
	kp := cosign.Policy{Keys: []cosign.Key{ci.pub}, TrustedRoot: tr, Identities: []cosign.Identity{{Issuer: `^https://token\.actions\.githubusercontent\.com$`, Subject: `^https://github\.com/acme/fleet/`}}}
	rk, err := Read(ctx, b, kp, Options{}, tg.ropts...)
	if err != nil {
		t.Fatal(err)
	}
	if rk.Action() != rollout.Abort || !strings.Contains(rk.Latest.Signer, "rollout.yml") {
		t.Errorf("keyless abort: %+v", rk.Latest)
	}
	// The key-only policy does not trust it: the pause stays the latest.
	if r := read(b, Options{}); r.Action() != rollout.Pause || len(r.Ignored) != 1 {
		t.Errorf("keyless statement under a key-only policy: %+v, ignored %+v", r.Latest, r.Ignored)
	}
}

func mustPredicate(t *testing.T, s Statement) []byte {
	t.Helper()
	p, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func b64(b []byte) string {
	out, _ := json.Marshal(b) // base64, quoted
	return strings.Trim(string(out), `"`)
}

func TestInProcessRegistry(t *testing.T) {
	for _, referrers := range []bool{true, false} {
		t.Run(fmt.Sprintf("referrers=%v", referrers), func(t *testing.T) {
			t.Parallel()
			scenario(t, inProcess(t, referrers))
		})
	}
}

// TestDistributionRegistry runs the scenario against Debian's
// docker-registry (distribution 2.8: no referrers API, so statements go
// through the sha256-<hex> fallback tag), with TLS and basic auth, and
// checks that the release's own signature still verifies beside them.
func TestDistributionRegistry(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	tg := target{host: reg.Host(), ropts: []remote.Option{
		remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}),
		remote.WithTransport(reg.HTTPClient().Transport),
	}}
	scenario(t, tg)

	d := tg.release(t)
	k := newKey(t, "ci.pub")
	ctx := context.Background()
	if err := cosign.Sign(ctx, d, k.sv, cosign.FormatBundle, tg.ropts...); err != nil {
		t.Fatal(err)
	}
	if err := Sign(ctx, d, Statement{Action: rollout.Pause, Digest: d.DigestStr(), SignedAt: time.Now()}, k.sv, tg.ropts...); err != nil {
		t.Fatal(err)
	}
	if _, err := cosign.Verify(ctx, d, []cosign.Key{k.pub}, tg.ropts...); err != nil {
		t.Errorf("the release's signature beside a statement: %v", err)
	}
	tags, err := remote.List(d.Context(), tg.ropts...)
	if err != nil {
		t.Fatal(err)
	}
	if fallback := strings.Replace(d.DigestStr(), ":", "-", 1); !slices.Contains(tags, fallback) {
		t.Errorf("no fallback tag %s among %v", fallback, tags)
	}
	// What a lookup costs: one /v2/ ping, the referrers API probe (404
	// here), the fallback tag, then a manifest and a blob per statement.
	time.Sleep(300 * time.Millisecond) // the access log lags the answers
	before := len(reg.Requests())
	if r, err := Read(ctx, d, cosign.Policy{Keys: []cosign.Key{k.pub}}, Options{}, tg.ropts...); err != nil || r.Action() != rollout.Pause {
		t.Errorf("Read = %+v, %v", r, err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return len(reg.Requests()) >= before+5 }, "fewer than 5 requests logged")
	time.Sleep(300 * time.Millisecond)
	if reqs := reg.Requests()[before:]; len(reqs) != 5 {
		var lines []string
		for _, r := range reqs {
			lines = append(lines, r.Method+" "+r.URI)
		}
		t.Errorf("a lookup with one statement made %d requests, want 5:\n%s", len(reqs), strings.Join(lines, "\n"))
	}
}

// TestRegistryDown: a registry failure is an error, never "no statement".
func TestRegistryDown(t *testing.T) {
	tg := inProcess(t, true)
	d := tg.release(t)
	srv := httptest.NewServer(nil)
	srv.Close()
	gone, _ := name.NewDigest(strings.TrimPrefix(srv.URL, "http://") + "/fleet/x@" + d.DigestStr())
	k := newKey(t, "k.pub")
	_, err := Read(context.Background(), gone, cosign.Policy{Keys: []cosign.Key{k.pub}}, Options{})
	if !errors.Is(err, ErrRegistry) {
		t.Errorf("err = %v, want ErrRegistry", err)
	}
	if _, err := Read(context.Background(), d, cosign.Policy{}, Options{}); err == nil {
		t.Error("an empty policy read statements")
	}
}
