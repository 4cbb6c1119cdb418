package compose

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/berth-dev/berth/state"
)

// watch applies rev and runs Watch on it until the test ends.
func (f *fixture) watch(rev state.Revision, interval time.Duration) {
	f.t.Helper()
	if _, err := f.a.Apply(context.Background(), rev, nil); err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- f.a.Watch(ctx, func() []state.Revision { return []state.Revision{rev} }, interval)
	}()
	f.t.Cleanup(func() {
		cancel()
		if err := <-done; err != context.Canceled {
			f.t.Errorf("Watch returned %v", err)
		}
	})
	time.Sleep(300 * time.Millisecond) // the event subscription starts
}

// restored waits until the service runs healthy in a container other than
// old, and returns it.
func (f *fixture) restored(project, old string, within time.Duration) ctr {
	f.t.Helper()
	var got ctr
	waitFor(f.t, within, "restore of "+project, func() bool {
		cs := f.projectContainers(project)
		if len(cs) != 1 || cs[0].id == old || cs[0].state != container.StateRunning || cs[0].health != container.Healthy {
			return false
		}
		got = cs[0]
		return true
	})
	// The restore is over when it releases the source.
	waitFor(f.t, within, "end of the restore of "+project, func() bool {
		mu := f.a.state.Lock(got.labels[LabelSource])
		if !mu.TryLock() {
			return false
		}
		mu.Unlock()
		return true
	})
	return got
}

func (f *fixture) removeContainer(id string) {
	f.t.Helper()
	if _, err := f.dc.ContainerRemove(context.Background(), id, client.ContainerRemoveOptions{Force: true}); err != nil {
		f.t.Fatal(err)
	}
}

// TestDriftRestores checks that Watch restores a removed container, and
// recreates one that was changed by hand, within a few seconds.
func TestDriftRestores(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	src := source("drift")
	project := ProjectName(src, "web")
	port := freePort(t)
	rev := revision(t, src, "v1", stateYAML("web"), map[string]string{"apps/web/compose.yaml": webCompose(imageV1, port)})
	f.watch(rev, time.Hour) // only events, no periodic check
	orig := f.serviceContainer(project, "web")

	// docker rm -f
	start := time.Now()
	f.removeContainer(orig.id)
	c := f.restored(project, orig.id, 15*time.Second)
	t.Logf("removed container restored in %s", time.Since(start).Round(time.Millisecond))
	if got := get(t, port); got != "v1" {
		t.Errorf("serves %q", got)
	}
	ds := f.a.Drift()[project]
	if ds.Restores != 1 || ds.Flapping || !strings.Contains(ds.LastReason, `service "web" has 0 of 1 containers`) || ds.Source != src || ds.App != "web" {
		t.Errorf("drift state %+v", ds)
	}

	// docker stop
	if _, err := f.dc.ContainerStop(ctx, c.id, client.ContainerStopOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "restart of the stopped container", func() bool {
		cs := f.projectContainers(project)
		return len(cs) == 1 && cs[0].id == c.id && cs[0].state == container.StateRunning && cs[0].health == container.Healthy
	})
	ds = f.a.Drift()[project]
	if ds.Restores != 2 || !strings.Contains(ds.LastReason, "is exited") {
		t.Errorf("drift state %+v", ds)
	}

	// Changed by hand: replaced by a container with another environment.
	// The source's lock is held meanwhile, as an Apply would: Watch must
	// wait for it.
	mu := f.a.state.Lock(src)
	mu.Lock()
	in, err := f.dc.ContainerInspect(ctx, c.id, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f.removeContainer(c.id)
	cfg := in.Container.Config
	cfg.Env = append(slices.DeleteFunc(cfg.Env, func(e string) bool { return strings.HasPrefix(e, "MESSAGE=") }), "MESSAGE=by-hand")
	cfg.Labels = maps.Clone(cfg.Labels)
	cfg.Labels[LabelConfigHash] = "by-hand"
	hand, err := f.dc.ContainerCreate(ctx, client.ContainerCreateOptions{Config: cfg, HostConfig: in.Container.HostConfig, Name: strings.TrimPrefix(in.Container.Name, "/")})
	if err != nil {
		mu.Unlock()
		t.Fatal(err)
	}
	if _, err := f.dc.ContainerStart(ctx, hand.ID, client.ContainerStartOptions{}); err != nil {
		mu.Unlock()
		t.Fatal(err)
	}
	if got := get(t, port); got != "by-hand" {
		t.Errorf("the container changed by hand serves %q", got)
	}
	time.Sleep(time.Second) // the events arrive while the source is busy
	if cs := f.projectContainers(project); len(cs) != 1 || cs[0].id != hand.ID {
		t.Errorf("Watch acted while the source was locked: %+v", cs)
	}
	start = time.Now()
	mu.Unlock()
	c2 := f.restored(project, hand.ID, 15*time.Second)
	t.Logf("container changed by hand recreated in %s", time.Since(start).Round(time.Millisecond))
	if c2.labels[LabelConfigHash] != c.labels[LabelConfigHash] {
		t.Errorf("hash %q, want %q", c2.labels[LabelConfigHash], c.labels[LabelConfigHash])
	}
	if got := get(t, port); got != "v1" {
		t.Errorf("after the restore, serves %q", got)
	}
	ds = f.a.Drift()[project]
	if ds.Restores != 3 || !strings.Contains(ds.LastReason, "was changed (config hash differs)") || ds.LastError != "" {
		t.Errorf("drift state %+v", ds)
	}
}

// TestDriftFlapping checks that a project restored too often is left
// alone, then restored again once the window has passed.
func TestDriftFlapping(t *testing.T) {
	f := newFixture(t)
	// A window far longer than the restores take, however loaded the
	// machine: the limit is reached whatever each restore costs. (When the
	// oldest restore leaves a window is the limiter's own test.)
	f.a.limit.Window = 10 * time.Minute
	src := source("flap")
	project := ProjectName(src, "web")
	rev := revision(t, src, "v1", stateYAML("web"), map[string]string{"apps/web/compose.yaml": webCompose(imageV1, freePort(t))})
	f.watch(rev, time.Second)
	c := f.serviceContainer(project, "web")
	for range defaultMaxRestores {
		f.removeContainer(c.id)
		c = f.restored(project, c.id, 30*time.Second)
	}
	f.removeContainer(c.id)
	time.Sleep(3 * time.Second)
	if cs := f.projectContainers(project); len(cs) != 0 {
		t.Fatalf("restored beyond the limit: %+v", cs)
	}
	ds := f.a.Drift()[project]
	if !ds.Flapping || ds.Restores != defaultMaxRestores {
		t.Errorf("drift state %+v", ds)
	}
	// Once the restores leave the window, it is restored again.
	f.a.driftMu.Lock()
	f.a.limit.Window = time.Nanosecond
	f.a.driftMu.Unlock()
	c = f.restored(project, c.id, 30*time.Second)
	if ds := f.a.Drift()[project]; ds.Flapping || ds.Restores != defaultMaxRestores+1 {
		t.Errorf("drift state after the window: %+v", ds)
	}
}
