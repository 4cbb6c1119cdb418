package bundle

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/oci"
)

// registryClient is a client for a testenv registry: its CA and
// credentials.
func registryClient(t testing.TB, reg *testenv.Registry) *oci.Client {
	t.Helper()
	c, err := oci.NewClient(oci.Options{CAFile: reg.CAFile, DockerConfig: reg.DockerConfig})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRoundTripDistribution makes a bundle from one real registry
// (Debian's docker-registry, distribution 2.8: TLS, basic auth, no
// referrers API) and loads it into another, empty one under a prefix: the
// state pulls and its signature verifies there, with every digest
// unchanged, and pushing again uploads nothing.
func TestRoundTripDistribution(t *testing.T) {
	if testing.Short() {
		t.Skip("starts docker-registry")
	}
	ctx := context.Background()
	upstream := testenv.StartRegistry(t, testenv.RegistryOptions{})
	plant := testenv.StartRegistry(t, testenv.RegistryOptions{})
	f := newFixture(t, upstream.Host(), registryClient(t, upstream))
	b, _ := f.create(t)
	if err := b.Verify(ctx, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := len(itemsByRole(b)[RoleSignature]); n != 2 {
		t.Fatalf("%d signatures bundled, want the bundle (through the tag fallback) and the .sig", n)
	}

	c := registryClient(t, plant)
	res, err := b.Push(ctx, c, PushOptions{Target: plant.Host() + "/plant"})
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	if res.Blobs.Skipped != 0 || res.Manifests.Pushed != 8 || res.Tags.Pushed != 5 {
		t.Errorf("first push into an empty registry = %+v", res)
	}
	for _, it := range b.Items() {
		r, _ := parseRefName(it.Ref)
		target, _ := MapRepository(r.repo, plant.Host()+"/plant")
		ref, _ := oci.ParseReference(target + "@" + it.Digest.String())
		if it.Tag != "" {
			ref = ref.WithTag(it.Tag)
		}
		got, err := c.Resolve(ctx, ref)
		if err != nil || got.Digest != it.Digest {
			t.Errorf("%s: %s, %v; want %s", ref, got.Digest, err, it.Digest)
		}
	}
	state, _ := oci.ParseReference(plant.Host() + "/plant/fleet/line-3:v1")
	desc, err := c.Resolve(ctx, state)
	if err != nil || desc.Digest != f.stateDig {
		t.Fatalf("state in the plant registry: %v, %v", desc.Digest, err)
	}
	d, _ := c.Name(state.WithDigest(desc.Digest.String()))
	vres, err := cosign.Verify(ctx, d, []cosign.Key{f.key.key}, c.RemoteOptions(ctx)...)
	if err != nil {
		t.Fatalf("verify the state in the plant registry: %v", err)
	}
	if vres.Format != cosign.FormatBundle {
		t.Errorf("verified %s, want the sigstore bundle (through the tag fallback)", vres.Format)
	}
	pulled, err := (&deliver.Remote{Client: c}).Pull(ctx, state.WithDigest(desc.Digest.String()), filepath.Join(t.TempDir(), "state"), deliver.PullOptions{Insecure: true})
	if err != nil || pulled.Digest != f.stateDig.String() || pulled.Files != 3 {
		t.Fatalf("pull from the plant registry: %+v, %v", pulled, err)
	}

	// Again: nothing is written.
	before := len(plant.Requests())
	again, err := b.Push(ctx, c, PushOptions{Target: plant.Host() + "/plant"})
	if err != nil {
		t.Fatal(err)
	}
	if again.Blobs.Pushed+again.Manifests.Pushed+again.Tags.Pushed != 0 {
		t.Errorf("second push = %+v, want everything skipped", again)
	}
	for _, r := range plant.Requests()[before:] {
		if r.Method != "GET" && r.Method != "HEAD" {
			t.Errorf("second push wrote: %s", r.Line)
		}
	}

	// The platform-restricted bundle: distribution refuses the index that
	// names the left-out platform; the rest arrives.
	arm, _ := f.create(t, "linux/arm64")
	res, err = arm.Push(ctx, c, PushOptions{Target: plant.Host() + "/arm"})
	if !errors.Is(err, ErrIncomplete) || len(res.Refused) != 1 || !strings.Contains(res.Refused[0], f.webIdx.String()) {
		t.Fatalf("push of a linux/arm64 bundle: %+v, %v", res, err)
	}
	child, _ := oci.ParseReference(plant.Host() + "/arm/acme/web@" + f.webKids["linux/arm64"].String())
	if _, err := c.Resolve(ctx, child); err != nil {
		t.Errorf("arm64 image in the plant registry: %v", err)
	}
}
