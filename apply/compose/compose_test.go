package compose

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/container"

	"github.com/berth-dev/berth/state"
)

func TestProjectName(t *testing.T) {
	for _, tc := range []struct{ source, app, want string }{
		{"line-3", "web", "berth-line-3-web"},
		{"Line.3", "Web_UI", "berth-line-3-web_ui"},
		{"a b", "c/d", "berth-a-b-c-d"},
	} {
		if got := ProjectName(tc.source, tc.app); got != tc.want {
			t.Errorf("ProjectName(%q, %q) = %q, want %q", tc.source, tc.app, got, tc.want)
		}
	}
}

// TestConfigHash checks that the hash ignores where the revision is
// extracted and the revision digest, and follows the config and env file.
func TestConfigHash(t *testing.T) {
	a := &Applier{opts: Options{EnvDir: t.TempDir()}}
	load := func(src, seed, compose string) *appProject {
		rev := revision(t, src, seed, stateYAML("web"), map[string]string{"apps/web/compose.yaml": compose})
		ap, err := a.load(context.Background(), rev, rev.State.Apps[0])
		if err != nil {
			t.Fatal(err)
		}
		return ap
	}
	c1 := "services:\n  web:\n    image: x:1\n    volumes: [\"./conf:/conf\"]\n    environment: [\"A=${A:-none}\"]\n"
	h1 := load("s", "1", c1).hashes["web"]
	if h := load("s", "2", c1).hashes["web"]; h != h1 {
		t.Errorf("another revision folder and digest changed the hash")
	}
	if h := load("s", "1", strings.Replace(c1, "x:1", "x:2", 1)).hashes["web"]; h == h1 {
		t.Errorf("another image kept the hash")
	}
	if err := os.WriteFile(filepath.Join(a.opts.EnvDir, "web.env"), []byte("A=set\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ap := load("s", "1", c1)
	if ap.hashes["web"] == h1 {
		t.Errorf("the env file did not change the hash")
	}
	s := ap.project.Services["web"]
	if v := s.Environment["A"]; v == nil || *v != "set" {
		t.Errorf("A = %v, want the env file's value", v)
	}
	if s.Labels[LabelConfigHash] != ap.hashes["web"] || s.CustomLabels[LabelRevision] == "" || s.CustomLabels[LabelSource] != "s" {
		t.Errorf("labels %v custom %v", s.Labels, s.CustomLabels)
	}
	if s.PullPolicy != types.PullPolicyNever {
		t.Errorf("pull policy %q", s.PullPolicy)
	}
}

// TestLoadIgnoresArtifactDotEnv checks that a .env shipped in the app
// folder is not used for interpolation.
func TestLoadIgnoresArtifactDotEnv(t *testing.T) {
	a := &Applier{opts: Options{EnvDir: t.TempDir()}}
	t.Setenv("B", "from-agent")
	rev := revision(t, "s", "1", stateYAML("web"), map[string]string{
		"apps/web/compose.yaml": "services:\n  web:\n    image: x:1\n    environment: [\"A=${A:-unset}\", \"B=${B:-unset}\"]\n",
		"apps/web/.env":         "A=from-artifact\n",
	})
	ap, err := a.load(context.Background(), rev, rev.State.Apps[0])
	if err != nil {
		t.Fatal(err)
	}
	env := ap.project.Services["web"].Environment
	if *env["A"] != "unset" || *env["B"] != "unset" {
		t.Errorf("A=%s B=%s, want both unset", *env["A"], *env["B"])
	}
}

func statusOf(t *testing.T, sts []state.AppStatus, app string) state.AppStatus {
	t.Helper()
	for _, s := range sts {
		if s.Name == app {
			if s.Kind != "compose" {
				t.Errorf("kind %q", s.Kind)
			}
			return s
		}
	}
	t.Fatalf("no status for app %q in %+v", app, sts)
	return state.AppStatus{}
}

// TestLifecycle walks one app through install, no-op, upgrade, failed
// upgrade with rollback, prune keeping the volume, and prune removing it.
func TestLifecycle(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	src := source("life")
	project := ProjectName(src, "web")
	volume := project + "_data"
	port := freePort(t)
	// The port comes from the device's env file.
	if err := os.WriteFile(filepath.Join(f.a.opts.EnvDir, "web.env"), []byte("WEB_PORT="+port+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	webFiles := func(image string, env ...string) map[string]string {
		return map[string]string{"apps/web/compose.yaml": webCompose(image, "${WEB_PORT}", env...)}
	}

	// v1: applied and serving.
	v1 := revision(t, src, "v1", stateYAML("web"), webFiles(imageV1))
	sts, err := f.a.Apply(ctx, v1, nil)
	if err != nil {
		t.Fatalf("apply v1: %v", err)
	}
	st := statusOf(t, sts, "web")
	if st.Outcome != OutcomeApplied {
		t.Fatalf("v1: %+v", st)
	}
	d := detailOf(t, st.Detail)
	if d.Project != project || len(d.Services) != 1 || d.Services[0].Name != "web" || d.Services[0].State != "running" || d.Services[0].Health != "healthy" || d.Services[0].Image != imageV1 {
		t.Errorf("v1 detail: %+v", d)
	}
	if got := get(t, port); got != "v1" {
		t.Fatalf("v1 serves %q", got)
	}
	c1 := f.serviceContainer(project, "web")
	for k, v := range map[string]string{LabelSource: src, LabelApp: "web", LabelRevision: v1.Digest} {
		if c1.labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c1.labels[k], v)
		}
	}
	if len(c1.labels[LabelConfigHash]) != 64 {
		t.Errorf("config hash label %q", c1.labels[LabelConfigHash])
	}
	if n := f.networks(project); len(n) != 1 {
		t.Errorf("networks %v", n)
	}

	// Another revision with the same app config: nothing is recreated.
	v1b := revision(t, src, "v1b", stateYAML("web"), webFiles(imageV1))
	if _, err := f.a.Apply(ctx, v1b, &v1); err != nil {
		t.Fatalf("apply v1b: %v", err)
	}
	if c := f.serviceContainer(project, "web"); c.id != c1.id {
		t.Errorf("an unchanged config recreated the container")
	}

	// v2: a new image upgrades in place.
	v2 := revision(t, src, "v2", stateYAML("web"), webFiles(imageV2))
	if sts, err = f.a.Apply(ctx, v2, &v1b); err != nil {
		t.Fatalf("apply v2: %v", err)
	}
	if got := get(t, port); got != "v2" {
		t.Fatalf("v2 serves %q", got)
	}
	c2 := f.serviceContainer(project, "web")
	if c2.id == c1.id || c2.labels[LabelRevision] != v2.Digest {
		t.Errorf("v2 did not recreate the container: %+v", c2)
	}

	// v3: unhealthy, fails fast and rolls back to v2; the other app of v3
	// that succeeded stays applied.
	v3files := webFiles(imageV2, "UNHEALTHY=1")
	v3files["apps/side/compose.yaml"] = "services:\n  side:\n    image: " + imageV1 + "\n    environment: [PORT=8081]\n"
	v3 := revision(t, src, "v3", stateYAML("web", "side"), v3files)
	start := time.Now()
	sts, err = f.a.Apply(ctx, v3, &v2)
	took := time.Since(start)
	if err == nil {
		t.Fatalf("apply v3 succeeded")
	}
	t.Logf("v3 error (after %s): %v", took, err)
	msg := err.Error()
	for _, want := range []string{`app "web"`, `service "web"`, "unhealthy", "hello listening on :8080", "rolled back to revision " + v2.Digest} {
		if !strings.Contains(msg, want) {
			t.Errorf("v3 error lacks %q", want)
		}
	}
	if took > 25*time.Second {
		t.Errorf("v3 took %s: the unhealthy container should fail fast", took)
	}
	st = statusOf(t, sts, "web")
	if st.Outcome != OutcomeFailed || st.Message != msg {
		t.Errorf("v3 web status: %+v", st)
	}
	if st := statusOf(t, sts, "side"); st.Outcome != OutcomeApplied {
		t.Errorf("v3 side status: %+v", st)
	}
	if got := get(t, port); got != "v2" {
		t.Fatalf("after the rollback, serves %q", got)
	}
	c := f.serviceContainer(project, "web")
	if c.health != container.Healthy || c.labels[LabelRevision] != v2.Digest {
		t.Errorf("after the rollback: %+v", c)
	}
	f.serviceContainer(ProjectName(src, "side"), "side")

	// v4 without the apps (its previous revision is v2, as v3 failed):
	// both are pruned, the named volume is kept.
	v4 := revision(t, src, "v4", stateYAML(), map[string]string{})
	sts, err = f.a.Apply(ctx, v4, &v2)
	if err != nil {
		t.Fatalf("apply v4: %v", err)
	}
	for _, app := range []string{"web", "side"} {
		if st := statusOf(t, sts, app); st.Outcome != OutcomePruned {
			t.Errorf("v4 %s: %+v", app, st)
		}
		if cs := f.projectContainers(ProjectName(src, app)); len(cs) != 0 {
			t.Errorf("v4 left containers of %s: %+v", app, cs)
		}
	}
	if n := f.networks(project); len(n) != 0 {
		t.Errorf("v4 left networks %v", n)
	}
	if !f.volumeExists(volume) {
		t.Errorf("v4 removed the volume %s", volume)
	}

	// v5 deploys it again with prune: {volumes: true}; v6 drops it: the
	// volume goes too.
	v5 := revision(t, src, "v5", "apiVersion: berth.dev/v1\nkind: DeviceState\napps:\n  - name: web\n    compose: {path: apps/web}\n    prune: {volumes: true}\n", webFiles(imageV1))
	if _, err := f.a.Apply(ctx, v5, &v4); err != nil {
		t.Fatalf("apply v5: %v", err)
	}
	if got := get(t, port); got != "v1" {
		t.Fatalf("v5 serves %q", got)
	}
	v6 := revision(t, src, "v6", stateYAML(), map[string]string{})
	sts, err = f.a.Apply(ctx, v6, &v5)
	if err != nil {
		t.Fatalf("apply v6: %v", err)
	}
	if st := statusOf(t, sts, "web"); st.Outcome != OutcomePruned {
		t.Errorf("v6: %+v", st)
	}
	if f.volumeExists(volume) {
		t.Errorf("v6 kept the volume %s", volume)
	}
}

// TestFailedFirstApply checks that an app that fails without a previous
// revision is brought down.
func TestFailedFirstApply(t *testing.T) {
	f := newFixture(t)
	f.a.opts.WaitTimeout = 20 * time.Second
	src := source("first")
	rev := revision(t, src, "v1", stateYAML("web"), map[string]string{"apps/web/compose.yaml": webCompose(imageV1, freePort(t), "UNHEALTHY=1")})
	sts, err := f.a.Apply(context.Background(), rev, nil)
	if err == nil || !strings.Contains(err.Error(), "brought it down") {
		t.Fatalf("err = %v", err)
	}
	if st := statusOf(t, sts, "web"); st.Outcome != OutcomeFailed {
		t.Errorf("status %+v", st)
	}
	if cs := f.projectContainers(ProjectName(src, "web")); len(cs) != 0 {
		t.Errorf("containers left: %+v", cs)
	}
}

// TestWaitTimeout checks that a service that never becomes healthy fails
// the wait when WaitTimeout passes.
func TestWaitTimeout(t *testing.T) {
	f := newFixture(t)
	f.a.opts.WaitTimeout = 4 * time.Second
	src := source("slow")
	compose := "services:\n  web:\n    image: " + imageV1 + "\n    healthcheck:\n      test: [\"CMD\", \"/hello\", \"healthcheck\"]\n      interval: 30s\n      start_period: 60s\n"
	rev := revision(t, src, "v1", stateYAML("web"), map[string]string{"apps/web/compose.yaml": compose})
	start := time.Now()
	_, err := f.a.Apply(context.Background(), rev, nil)
	if err == nil || !strings.Contains(err.Error(), "is not running and healthy after 4s") || !strings.Contains(err.Error(), "health starting") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("took %s", d)
	}
}

// TestAppTimeoutAndNoWait checks the wait an app asks for itself (a Margo
// component's timeout and wait): its timeout replaces the applier's, and
// with NoWait the app is applied once started, before it is healthy.
func TestAppTimeoutAndNoWait(t *testing.T) {
	f := newFixture(t)
	f.a.opts.WaitTimeout = 10 * time.Minute // the app's own timeout must win
	src := source("appwait")
	slow := "services:\n  web:\n    image: " + imageV1 + "\n    healthcheck:\n      test: [\"CMD\", \"/hello\", \"healthcheck\"]\n      interval: 30s\n      start_period: 60s\n"
	rev := revision(t, src, "v1", stateYAML("web"), map[string]string{"apps/web/compose.yaml": slow})
	rev.State.Apps[0].Compose.Timeout = 3 * time.Second
	start := time.Now()
	_, err := f.a.Apply(context.Background(), rev, nil)
	if err == nil || !strings.Contains(err.Error(), "is not running and healthy after 3s") {
		t.Fatalf("timeout 3s: err = %v", err)
	}
	if d := time.Since(start); d > 2*time.Minute {
		t.Errorf("took %s: the applier's 10m wait was used", d)
	}

	// wait: false: applied while the health check is still starting.
	rev2 := revision(t, src, "v2", stateYAML("web"), map[string]string{"apps/web/compose.yaml": slow})
	rev2.State.Apps[0].Compose.NoWait = true
	sts, err := f.a.Apply(context.Background(), rev2, nil)
	if err != nil || statusOf(t, sts, "web").Outcome != OutcomeApplied {
		t.Fatalf("NoWait: %v %+v", err, sts)
	}
	c := f.serviceContainer(ProjectName(src, "web"), "web")
	if c.state != container.StateRunning || c.health != container.Starting {
		t.Errorf("NoWait applied a container %s/%s, want running and still starting", c.state, c.health)
	}
}

// TestTwoSources checks that the projects of two sources are independent.
func TestTwoSources(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a, b := source("a"), source("b")
	pa, pb := freePort(t), freePort(t)
	ra := revision(t, a, "1", stateYAML("web"), map[string]string{"apps/web/compose.yaml": webCompose(imageV1, pa)})
	rb := revision(t, b, "1", stateYAML("web"), map[string]string{"apps/web/compose.yaml": webCompose(imageV2, pb)})
	if _, err := f.a.Apply(ctx, ra, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.Apply(ctx, rb, nil); err != nil {
		t.Fatal(err)
	}
	ca := f.serviceContainer(ProjectName(a, "web"), "web")
	if get(t, pa) != "v1" || get(t, pb) != "v2" {
		t.Fatal("not serving")
	}
	// b drops its app: a's is untouched.
	rb2 := revision(t, b, "2", stateYAML(), map[string]string{})
	sts, err := f.a.Apply(ctx, rb2, &rb)
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != 1 || sts[0].Outcome != OutcomePruned {
		t.Errorf("b: %+v", sts)
	}
	if c := f.serviceContainer(ProjectName(a, "web"), "web"); c.id != ca.id || c.state != container.StateRunning {
		t.Errorf("a's container changed: %+v", c)
	}
	if len(f.projectContainers(ProjectName(b, "web"))) != 0 {
		t.Errorf("b's app is still there")
	}
	// A source whose project name collides with another source's project
	// is refused: source <run> with app "a-web" would be berth-<run>-a-web.
	c2 := revision(t, strings.TrimSuffix(a, "-a"), "1", stateYAML("a-web"), map[string]string{"apps/a-web/compose.yaml": webCompose(imageV1, freePort(t))})
	if ProjectName(c2.Source, "a-web") != ProjectName(a, "web") {
		t.Fatalf("test setup: %s != %s", ProjectName(c2.Source, "a-web"), ProjectName(a, "web"))
	}
	sts, err = f.a.Apply(ctx, c2, nil)
	if err == nil || !strings.Contains(err.Error(), "belongs to source") {
		t.Fatalf("colliding project: err = %v", err)
	}
	if c := f.serviceContainer(ProjectName(a, "web"), "web"); c.id != ca.id {
		t.Errorf("the colliding apply touched a's container")
	}
	// The other source's apply pruned nothing of a.
	if sts[0].Outcome != OutcomeFailed {
		t.Errorf("%+v", sts)
	}
}

// TestExtensions checks that an enabled extension is applied and removed
// once disabled.
func TestExtensions(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	src := source("ext")
	port := freePort(t)
	state := "apiVersion: berth.dev/v1\nkind: DeviceState\napps: []\nextensions:\n  usb: {compose: {path: ext/usb}}\n"
	files := func() map[string]string {
		return map[string]string{"ext/usb/compose.yaml": webCompose(imageV1, port)}
	}
	off := revision(t, src, "1", state, files())
	sts, err := f.a.Apply(ctx, off, nil)
	if err != nil || len(sts) != 0 {
		t.Fatalf("disabled: %v %+v", err, sts)
	}
	on := revision(t, src, "1", state, files(), "usb")
	sts, err = f.a.Apply(ctx, on, &off)
	if err != nil {
		t.Fatal(err)
	}
	if st := statusOf(t, sts, "usb"); st.Outcome != OutcomeApplied {
		t.Errorf("enabled: %+v", st)
	}
	if get(t, port) != "v1" {
		t.Fatal("extension not serving")
	}
	off2 := revision(t, src, "1", state, files())
	sts, err = f.a.Apply(ctx, off2, &on)
	if err != nil {
		t.Fatal(err)
	}
	if st := statusOf(t, sts, "usb"); st.Outcome != OutcomePruned {
		t.Errorf("disabled again: %+v", st)
	}
	if cs := f.projectContainers(ProjectName(src, "usb")); len(cs) != 0 {
		t.Errorf("extension left: %+v", cs)
	}
}

// TestNoState checks that a revision without berth.yaml deploys nothing.
func TestNoState(t *testing.T) {
	f := newFixture(t)
	sts, err := f.a.Apply(context.Background(), state.Revision{Source: source("none"), Digest: "sha256:00", Dir: t.TempDir()}, nil)
	if err != nil || len(sts) != 0 {
		t.Fatalf("%v %+v", err, sts)
	}
}
