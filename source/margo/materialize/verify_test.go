package materialize

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/berth-dev/berth/internal/errdef"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/margo/pack"
	"github.com/berth-dev/berth/source/oci"
)

// keys returns a signing key and the policy that accepts it.
func keys(t *testing.T) (signature.SignerVerifier, cosign.Policy) {
	t.Helper()
	priv, pub, err := cosign.GenerateKeyPair([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	kf := filepath.Join(t.TempDir(), "cosign.key")
	if err := os.WriteFile(kf, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	sv, err := cosign.LoadPrivateKey(kf, func() ([]byte, error) { return []byte("pw"), nil })
	if err != nil {
		t.Fatal(err)
	}
	k, err := cosign.ParsePublicKey("cosign.pub", pub)
	if err != nil {
		t.Fatal(err)
	}
	return sv, cosign.Policy{Keys: []cosign.Key{k}}
}

func (e *env) sign(t *testing.T, repo, digest string, sv signature.SignerVerifier) {
	t.Helper()
	ref, err := oci.ParseReference("oci://" + e.host + "/" + repo + "@" + digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := deliver.Sign(context.Background(), e.c, ref, deliver.Signer{Key: sv, Format: cosign.FormatLegacy}); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyPolicy: under a trust policy every component's digest must
// carry a valid signature, a Helm chart's as well as a Compose Archive's,
// before anything is extracted or handed to the appliers.
func TestVerifyPolicy(t *testing.T) {
	e := newEnv(t)
	sv, policy := keys(t)
	signedWeb := e.composeArchive(t, "acme/web", "1.0.0", map[string]string{"compose.yaml": "services: {}\n"})
	e.sign(t, "acme/web", signedWeb, sv)
	e.composeArchive(t, "acme/unsigned", "1.0.0", map[string]string{"compose.yaml": "services: {}\n"})

	chartDir := t.TempDir()
	os.MkdirAll(filepath.Join(chartDir, "helm/monitor/templates"), 0o755)
	os.WriteFile(filepath.Join(chartDir, "helm/monitor/Chart.yaml"), []byte("apiVersion: v2\nname: monitor\nversion: 0.3.0\n"), 0o644)
	os.WriteFile(filepath.Join(chartDir, "margo.yaml"), []byte(`id: acme
metadata: {name: m, version: 1.0.0}
deploymentProfiles:
  - type: helm
    components: [{name: monitor, properties: {repository: oci://`+e.host+`/charts/monitor, revision: 0.3.0}}]
`), 0o644)
	pkgRef, _ := oci.ParseReference("oci://" + e.host + "/apps/m")
	pushed, err := pack.PushPackage(context.Background(), e.c, pack.PackageOptions{Dir: chartDir, Ref: pkgRef})
	if err != nil {
		t.Fatal(err)
	}
	chartDigest := pushed.Components[0].Digest
	helmYAML := `id: ` + idB + `
metadata: {name: monitor, namespace: ot}
spec:
  applicationId: acme
  deploymentProfile:
    type: helm
    components:
      - name: monitor
        properties: {repository: oci://` + e.host + `/charts/monitor, revision: 0.3.0}
`
	verified := func(t *testing.T) Options {
		o := e.opts(t)
		o.Fetcher = Registry{Remote: &deliver.Remote{Client: e.c}, Policy: &policy}
		return o
	}
	ctx := context.Background()

	// Signed Compose Archive: extracted.
	res, err := Materialize(ctx, []Deployment{{Digest: "sha256:aa", Deployment: deployment(t, composeDeployment(idA, "app", e.host, "acme/web", "1.0.0", ""))}}, verified(t))
	if err != nil || len(res.Failed) != 0 || len(res.Revision.State.Apps) != 1 {
		t.Fatalf("signed archive: %v %+v", err, res)
	}
	// Unsigned Compose Archive: refused, nothing extracted.
	res, err = Materialize(ctx, []Deployment{{Digest: "sha256:aa", Deployment: deployment(t, composeDeployment(idA, "app", e.host, "acme/unsigned", "1.0.0", ""))}}, verified(t))
	if err != nil {
		t.Fatal(err)
	}
	f := res.Failed[idA]
	if f.Code != CodeRefused || !errors.Is(f.Err, deliver.ErrUnverified) || !errors.Is(f.Err, cosign.ErrNoSignature) || !strings.Contains(f.Err.Error(), "acme/unsigned") {
		t.Fatalf("unsigned archive: %+v", f)
	}
	if entries, _ := os.ReadDir(res.Revision.Dir); len(entries) != 1 {
		t.Errorf("the refused archive left %v in the revision", entries)
	}
	// Unsigned chart: refused before the Helm applier ever sees it.
	res, err = Materialize(ctx, []Deployment{{Digest: "sha256:bb", Deployment: deployment(t, helmYAML)}}, verified(t))
	if err != nil {
		t.Fatal(err)
	}
	if f := res.Failed[idB]; f.Code != CodeRefused || !errors.Is(f.Err, deliver.ErrUnverified) || len(res.Revision.State.Apps) != 0 {
		t.Fatalf("unsigned chart: %+v, apps %+v", f, res.Revision.State.Apps)
	}
	// Signed chart: extracted into the revision, the verified digest
	// recorded in the plan.
	e.sign(t, "charts/monitor", chartDigest, sv)
	res, err = Materialize(ctx, []Deployment{{Digest: "sha256:bb", Deployment: deployment(t, helmYAML)}}, verified(t))
	if err != nil || len(res.Failed) != 0 || res.Plan.Deployments[0].Components[0].Digest != chartDigest || res.Revision.State.Apps[0].Helm.Path == "" {
		t.Fatalf("signed chart: %v %+v", err, res)
	}
	// A Compose Archive named as a Helm component: refused as not a chart.
	notChart := strings.Replace(helmYAML, "charts/monitor, revision: 0.3.0", "acme/web, revision: 1.0.0", 1)
	res, err = Materialize(ctx, []Deployment{{Digest: "sha256:bb", Deployment: deployment(t, notChart)}}, verified(t))
	if err != nil {
		t.Fatal(err)
	}
	if f := res.Failed[idB]; !errors.Is(f.Err, ErrNotChart) || !errors.Is(f.Err, errdef.ErrRefused) {
		t.Fatalf("not a chart: %+v", f)
	}
	// No policy and no opt-out: a configuration mistake, said so.
	o := e.opts(t)
	o.Fetcher = Registry{Remote: &deliver.Remote{Client: e.c}}
	res, err = Materialize(ctx, []Deployment{{Digest: "sha256:aa", Deployment: deployment(t, composeDeployment(idA, "app", e.host, "acme/web", "1.0.0", ""))}}, o)
	if err != nil || !strings.Contains(res.Failed[idA].Err.Error(), "margo.verify") {
		t.Fatalf("no policy: %v %+v", err, res.Failed)
	}
}

// TestReuseAndRollback: an unchanged deployment is taken over from the
// previous revision without a request; Rollback puts a failed deployment
// back on its previous revision and leaves a new one out.
func TestReuseAndRollback(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.composeArchive(t, "acme/web", "1.0.0", map[string]string{"compose.yaml": "services: {v1: {image: x:1}}\n"})
	e.composeArchive(t, "acme/web", "2.0.0", map[string]string{"compose.yaml": "services: {v2: {image: x:2}}\n"})
	e.composeArchive(t, "acme/other", "1.0.0", map[string]string{"compose.yaml": "services: {o: {image: x:1}}\n"})
	const idC = "2b6c1f1e-2a44-4c7e-9d51-7e3f5a0c9b21"
	a1 := Deployment{Digest: "sha256:a1", Deployment: deployment(t, composeDeployment(idA, "app", e.host, "acme/web", "1.0.0", ""))}
	b1 := Deployment{Digest: "sha256:b1", Deployment: deployment(t, composeDeployment(idB, "other", e.host, "acme/other", "1.0.0", ""))}
	prev, err := Materialize(ctx, []Deployment{a1, b1}, e.opts(t))
	if err != nil || len(prev.Failed) != 0 {
		t.Fatal(err, prev.Failed)
	}

	// B unchanged: no request for it; A updated; C new.
	a2 := Deployment{Digest: "sha256:a2", Deployment: deployment(t, composeDeployment(idA, "app", e.host, "acme/web", "2.0.0", ""))}
	c1 := Deployment{Digest: "sha256:c1", Deployment: deployment(t, composeDeployment(idC, "third", e.host, "acme/other", "1.0.0", ""))}
	o := e.opts(t)
	o.Previous, o.PreviousDir = prev.Plan, prev.Revision.Dir
	before := e.requests.Load()
	next, err := Materialize(ctx, []Deployment{a2, b1}, o)
	if err != nil || len(next.Failed) != 0 {
		t.Fatal(err, next.Failed)
	}
	n := e.requests.Load() - before
	before = e.requests.Load()
	if _, err := Materialize(ctx, []Deployment{a1, b1}, func() Options { o := o; o.Dir = filepath.Join(t.TempDir(), "r"); return o }()); err != nil {
		t.Fatal(err)
	}
	if again := e.requests.Load() - before; again != 0 {
		t.Errorf("materializing deployments unchanged since the previous revision made %d registry requests, want 0", again)
	}
	if n == 0 {
		t.Fatal("the changed deployment made no request")
	}
	if !reflect.DeepEqual(next.Plan.Deployments[1], prev.Plan.Deployments[1]) {
		t.Errorf("unchanged deployment = %+v, want %+v", next.Plan.Deployments[1], prev.Plan.Deployments[1])
	}
	o.Dir = filepath.Join(t.TempDir(), "next")
	next, err = Materialize(ctx, []Deployment{a2, b1, c1}, o)
	if err != nil || len(next.Failed) != 0 {
		t.Fatal(err, next.Failed)
	}

	// A and C failed to apply: A goes back to 1.0.0, C is left out, B stays.
	ro := e.opts(t)
	ro.Previous, ro.PreviousDir = prev.Plan, prev.Revision.Dir
	rb, err := Rollback(next.Plan, next.Revision.Dir, []string{idA, idC}, ro)
	if err != nil {
		t.Fatal(err)
	}
	if len(rb.Plan.Deployments) != 2 || rb.Plan.Deployments[0].ID != idA || !rb.Plan.Deployments[0].Carried || rb.Plan.Deployments[0].Digest != "sha256:a1" || rb.Plan.Deployments[1].ID != idB {
		t.Fatalf("rollback plan = %+v", rb.Plan.Deployments)
	}
	if rb.Revision.Digest == next.Revision.Digest || rb.Plan.ManifestVersion != next.Plan.ManifestVersion {
		t.Errorf("rollback revision %s (manifestVersion %d), next %s", rb.Revision.Digest, rb.Plan.ManifestVersion, next.Revision.Digest)
	}
	data, err := os.ReadFile(filepath.Join(rb.Revision.Dir, rb.Revision.State.Apps[0].Compose.Path, "compose.yaml"))
	if err != nil || !strings.Contains(string(data), "v1") {
		t.Errorf("rolled-back compose.yaml = %q, %v", data, err)
	}
	if _, err := os.Stat(filepath.Join(rb.Revision.Dir, rb.Revision.State.Apps[1].Compose.Path, "compose.yaml")); err != nil {
		t.Error(err)
	}
	if p, rev, err := LoadPlan("margo", rb.Revision.Dir); err != nil || rev.Digest != rb.Revision.Digest || len(p.Deployments) != 2 {
		t.Errorf("LoadPlan of the rollback = %+v %v", rev, err)
	}
}
