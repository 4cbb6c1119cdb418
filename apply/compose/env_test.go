package compose

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestComposeEnv checks the interpolation environment a source gives an
// app (state.Compose.Env, Margo parameters) against the real engine: it
// reaches the containers, a change recreates them, and the device's env
// file goes over it.
func TestComposeEnv(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	src := source("env")
	port := freePort(t)
	files := func() map[string]string {
		return map[string]string{"apps/web/compose.yaml": webCompose(imageV1, "${WEB_PORT}", "MESSAGE=${GREETING:-none}")}
	}
	apply := func(seed string, env map[string]string) {
		t.Helper()
		r := revision(t, src, seed, stateYAML("web"), files())
		r.State.Apps[0].Compose.Env = env
		sts, err := f.a.Apply(ctx, r, nil)
		if err != nil {
			t.Fatalf("apply %s: %v", seed, err)
		}
		if st := statusOf(t, sts, "web"); st.Outcome != OutcomeApplied {
			t.Fatalf("apply %s: %+v", seed, st)
		}
	}
	apply("1", map[string]string{"WEB_PORT": port, "GREETING": "from-margo"})
	if got := get(t, port); got != "from-margo" {
		t.Fatalf("serves %q, want the value of the revision's env", got)
	}
	c1 := f.serviceContainer(ProjectName(src, "web"), "web")

	apply("2", map[string]string{"WEB_PORT": port, "GREETING": "changed"})
	if got := get(t, port); got != "changed" {
		t.Fatalf("serves %q after the env changed", got)
	}
	if c2 := f.serviceContainer(ProjectName(src, "web"), "web"); c2.id == c1.id {
		t.Error("a changed env did not recreate the container")
	}

	// The device's env file wins over the source's values.
	if err := os.WriteFile(filepath.Join(f.a.opts.EnvDir, "web.env"), []byte("GREETING=local\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	apply("3", map[string]string{"WEB_PORT": port, "GREETING": "changed"})
	if got := get(t, port); got != "local" {
		t.Fatalf("serves %q, want the device's env file value", got)
	}
}
