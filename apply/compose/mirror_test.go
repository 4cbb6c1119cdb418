package compose

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/source/mirror"
	"github.com/berth-dev/berth/state"
)

// TestPullThroughMirror runs the mirror path against the real engine and
// two registries, "upstream" (the image's own registry, named in the
// compose file) and "plant" (its mirror), holding the same image with the
// same digest:
//   - the image is pulled from plant, upstream sees no request, the
//     service runs plant's reference, the status names the mirror, and the
//     config hash is that of the written reference;
//   - plant stopped: the running app is left alone (its image is present
//     under plant's reference: no pull, no recreate);
//   - plant stopped, image gone, sourceFallback true: pulled from upstream;
//   - the same with sourceFallback false: a clear error listing what was
//     tried, and upstream still sees nothing.
func TestPullThroughMirror(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	docker := testenv.Docker(t)
	upstream := testenv.StartRegistry(t, testenv.RegistryOptions{})
	plant := testenv.StartRegistry(t, testenv.RegistryOptions{})
	docker.TrustRegistry(t, upstream)
	docker.TrustRegistry(t, plant)

	hello := testenv.BuildHello(t)
	opts := testenv.ImageOptions{Env: []string{"MESSAGE=mirrored"}}
	repo := "acme/" + runID + "/hello"
	upDigest := testenv.PushImage(t, upstream, repo+":v1", hello, opts)
	plantDigest := testenv.PushImage(t, plant, "mirror/"+repo+":v1", hello, opts)
	if upDigest != plantDigest {
		t.Fatalf("upstream digest %s, plant digest %s: the test needs one image", upDigest, plantDigest)
	}
	written := upstream.Host() + "/" + repo + ":v1@" + upDigest
	plantRef := plant.Host() + "/mirror/" + repo + ":v1@" + upDigest
	srcPrefix := upstream.Host() + "/acme"
	mirrorPrefix := plant.Host() + "/mirror/acme"

	// One Docker config with the credentials of both registries: each
	// endpoint is pulled with its own host's.
	cfg := `{"auths": {` +
		`"` + upstream.Host() + `": {"auth": "` + base64.StdEncoding.EncodeToString([]byte(upstream.Username+":"+upstream.Password)) + `"},` +
		`"` + plant.Host() + `": {"auth": "` + base64.StdEncoding.EncodeToString([]byte(plant.Username+":"+plant.Password)) + `"}}}`
	dockerConfig := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(dockerConfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	applier := func(fallback bool) *Applier {
		t.Helper()
		a, err := New(ctx, Options{
			Host:         dockerHost(),
			WaitTimeout:  30 * time.Second,
			EnvDir:       t.TempDir(),
			DockerConfig: dockerConfig,
			Mirrors:      mirrors(t, mirror.Set{Source: srcPrefix, Mirrors: []string{mirrorPrefix}, SourceFallback: fallback}),
			Log:          slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		return a
	}
	// removeImages removes what the engine has of the image, so that the
	// next apply really pulls; the project must be down.
	removeImages := func() {
		t.Helper()
		for _, ref := range []string{written, plantRef} {
			docker.RemoveImage(t, ref[:strings.Index(ref, ":v1@")]+"@"+upDigest)
			if docker.ImagePresent(t, ref) {
				t.Fatalf("image %s still present", ref)
			}
		}
	}
	removeImages()
	t.Cleanup(func() {
		cleanup(t, f.dc) // the containers first: they hold the image
		removeImages()
	})
	// upstreamImageRequests counts upstream's requests for the image's
	// repository (manifests and blobs), its log polled briefly.
	upstreamImageRequests := func() int {
		time.Sleep(300 * time.Millisecond)
		return upstream.RequestCount("/v2/" + repo + "/")
	}
	plantManifestGets := func() int {
		time.Sleep(300 * time.Millisecond)
		return plant.RequestCount(`"GET /v2/mirror/` + repo + `/manifests/`)
	}

	src := source("mirror")
	project := ProjectName(src, "web")
	port := freePort(t)
	files := func() map[string]string {
		return map[string]string{"apps/web/compose.yaml": webCompose(written, port)}
	}
	// The hash the service must carry: that of the written reference, as
	// an applier without mirrors computes it.
	plain := &Applier{opts: Options{EnvDir: t.TempDir()}}
	probe := revision(t, src, "probe", stateYAML("web"), files())
	pap, err := plain.load(ctx, probe, probe.State.Apps[0])
	if err != nil {
		t.Fatal(err)
	}
	wantHash := pap.hashes["web"]

	// 1. Pulled from plant; upstream sees nothing.
	a := applier(true)
	up0 := upstreamImageRequests()
	v1 := revision(t, src, "v1", stateYAML("web"), files())
	sts, err := a.Apply(ctx, v1, nil)
	if err != nil {
		t.Fatalf("apply through the mirror: %v", err)
	}
	if got := get(t, port); got != "mirrored" {
		t.Errorf("serves %q", got)
	}
	if n := upstreamImageRequests(); n != up0 {
		t.Errorf("upstream saw %d image requests, want none", n-up0)
	}
	pulls := plantManifestGets()
	if pulls == 0 {
		t.Errorf("plant saw no manifest request")
	}
	if !docker.ImagePresent(t, plantRef) || docker.ImagePresent(t, written) {
		t.Errorf("present: plant %v, upstream %v; want only plant's reference", docker.ImagePresent(t, plantRef), docker.ImagePresent(t, written))
	}
	c := f.serviceContainer(project, "web")
	if c.image != plantRef {
		t.Errorf("container image %q, want %q", c.image, plantRef)
	}
	if c.labels[LabelConfigHash] != wantHash {
		t.Errorf("config hash %s, want %s (that of the written reference)", c.labels[LabelConfigHash], wantHash)
	}
	d := detailOf(t, statusOf(t, sts, "web").Detail)
	if len(d.Services) != 1 || d.Services[0].Source != mirrorPrefix || d.Services[0].Image != plantRef {
		t.Errorf("detail: %+v, want source %s", d, mirrorPrefix)
	}

	// Another revision: present, not pulled, not recreated; a drift check
	// of the applied project sees no drift.
	v2 := revision(t, src, "v2", stateYAML("web"), files())
	if _, err := a.Apply(ctx, v2, &v1); err != nil {
		t.Fatalf("apply again: %v", err)
	}
	if n := plantManifestGets(); n != pulls {
		t.Errorf("pulled again: %d manifest requests, then %d", pulls, n)
	}
	if c2 := f.serviceContainer(project, "web"); c2.id != c.id {
		t.Errorf("container recreated: %s, then %s", c.id, c2.id)
	}
	ap, err := a.load(ctx, v2, v2.State.Apps[0])
	if err != nil {
		t.Fatal(err)
	}
	if reason, _ := drifted(ap, f.projectContainers(project)); reason != "" {
		t.Errorf("drift after apply: %s", reason)
	}

	// 2. Plant stopped: the image is present under plant's reference, so
	// nothing is pulled and nothing is recreated, with fallback or not.
	plant.Stop()
	for i, fallback := range []bool{true, false} {
		ai := applier(fallback)
		vi := revision(t, src, "v3-"+string(rune('a'+i)), stateYAML("web"), files())
		if _, err := ai.Apply(ctx, vi, &v2); err != nil {
			t.Fatalf("apply with plant stopped (fallback %v): %v", fallback, err)
		}
		if c3 := f.serviceContainer(project, "web"); c3.id != c.id {
			t.Errorf("fallback %v: container recreated", fallback)
		}
	}
	if n := upstreamImageRequests(); n != up0 {
		t.Errorf("upstream saw %d image requests, want none", n-up0)
	}

	// 3. Plant stopped and the image gone, sourceFallback true: pulled from
	// upstream, and the service runs the written reference.
	if err := a.down(ctx, project, true); err != nil {
		t.Fatal(err)
	}
	removeImages()
	v4 := revision(t, src, "v4", stateYAML("web"), files())
	sts, err = a.Apply(ctx, v4, nil)
	if err != nil {
		t.Fatalf("apply with plant stopped: %v", err)
	}
	if got := get(t, port); got != "mirrored" {
		t.Errorf("serves %q", got)
	}
	if n := upstreamImageRequests(); n == up0 {
		t.Errorf("upstream saw no request")
	}
	c = f.serviceContainer(project, "web")
	if c.image != written || c.labels[LabelConfigHash] != wantHash {
		t.Errorf("container image %q hash %s, want %q %s", c.image, c.labels[LabelConfigHash], written, wantHash)
	}
	d = detailOf(t, statusOf(t, sts, "web").Detail)
	if len(d.Services) != 1 || d.Services[0].Source != "" || d.Services[0].Image != written {
		t.Errorf("detail: %+v, want no mirror", d)
	}

	// 4. The same with sourceFallback false: refused, naming what was
	// tried; upstream not contacted.
	if err := a.down(ctx, project, true); err != nil {
		t.Fatal(err)
	}
	removeImages()
	up1 := upstreamImageRequests()
	strict := applier(false)
	v5 := revision(t, src, "v5", stateYAML("web"), files())
	sts, err = strict.Apply(ctx, v5, nil)
	t.Logf("apply without fallback: %v", err)
	if err == nil {
		t.Fatal("applied with the mirror down and no source fallback")
	}
	for _, want := range []string{"pull " + written, "no registry served it", "[mirror " + mirrorPrefix + "]", "pull " + plantRef, "the source registry was not tried: sourceFallback is off for " + srcPrefix} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q", want)
		}
	}
	if st := statusOf(t, sts, "web"); st.Outcome != OutcomeFailed || !strings.Contains(st.Message, "no registry served it") {
		t.Errorf("status %+v", st)
	}
	if n := upstreamImageRequests(); n != up1 {
		t.Errorf("upstream saw %d image requests with sourceFallback off", n-up1)
	}

	// A tag reference has no endpoint there: mirrors are digest-only.
	_, err = strict.pull(ctx, upstream.Host()+"/"+repo+":v1")
	if !errors.Is(err, mirror.ErrTagNeedsSource) {
		t.Errorf("tag through digest-only mirrors: %v", err)
	}
}

// TestEnsureImagesKeepsRunningReference checks the choice among present
// references: the one the service's containers run wins over the
// endpoint order, so that a mirror becoming available again, or listed
// first, does not recreate a container.
func TestEnsureImagesKeepsRunningReference(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	src := source("keep")
	project := ProjectName(src, "web")
	port := freePort(t)
	// imageV1 is loaded under docker.io/berth-ctest/hello:v1. A mirror set
	// for docker.io/berth-ctest whose mirror reference is also present:
	// tag the same image as the mirror's reference.
	mirrorRef := "mirror.local/ctest/hello:v1"
	if _, err := f.dc.ImageTag(ctx, client.ImageTagOptions{Source: imageV1, Target: mirrorRef}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.dc.ImageRemove(context.Background(), mirrorRef, client.ImageRemoveOptions{}) })

	// Without mirrors: the service runs imageV1.
	rev := func(seed string) state.Revision {
		return revision(t, src, seed, stateYAML("web"), map[string]string{"apps/web/compose.yaml": webCompose(imageV1, port)})
	}
	v1 := rev("v1")
	if _, err := f.a.Apply(ctx, v1, nil); err != nil {
		t.Fatal(err)
	}
	c := f.serviceContainer(project, "web")
	if c.image != imageV1 {
		t.Fatalf("image %q", c.image)
	}

	// With a mirror that allows tags and is present: the running reference
	// is kept, the container is not recreated.
	a, err := New(ctx, Options{Host: dockerHost(), WaitTimeout: 30 * time.Second, EnvDir: f.a.opts.EnvDir, DockerConfig: f.a.opts.DockerConfig,
		Mirrors: mirrors(t, mirror.Set{Source: "docker.io/berth-ctest", Mirrors: []string{"mirror.local/ctest"}, AllowTags: true})})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	v2 := rev("v2")
	if _, err := a.Apply(ctx, v2, &v1); err != nil {
		t.Fatal(err)
	}
	if c2 := f.serviceContainer(project, "web"); c2.id != c.id || c2.image != imageV1 {
		t.Errorf("container %s image %q, want %s %q kept", c2.id, c2.image, c.id, imageV1)
	}

	// No container: the first present endpoint, the mirror, is chosen.
	if err := a.down(ctx, project, true); err != nil {
		t.Fatal(err)
	}
	v3 := rev("v3")
	sts, err := a.Apply(ctx, v3, &v2)
	if err != nil {
		t.Fatal(err)
	}
	if c3 := f.serviceContainer(project, "web"); c3.image != mirrorRef || c3.labels[LabelImageMirror] != "mirror.local/ctest" || c3.labels[LabelConfigHash] != c.labels[LabelConfigHash] {
		t.Errorf("container image %q labels %v, want %q from the mirror with the same config hash", c3.image, c3.labels, mirrorRef)
	}
	if d := detailOf(t, statusOf(t, sts, "web").Detail); d.Services[0].Source != "mirror.local/ctest" {
		t.Errorf("detail %+v", d)
	}
}

// mirrors is the resolver of sets (the agent builds one from its
// configuration's registries:, which package mirror checks).
func mirrors(t *testing.T, sets ...mirror.Set) *mirror.Resolver {
	t.Helper()
	r, err := mirror.New(sets)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
