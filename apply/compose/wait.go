package compose

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/compose/v5/pkg/api"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/berth-dev/berth/state"
)

// logLines is how many lines of a failing service's log an error carries.
const logLines = 20

// Detail is the AppStatus.Detail of a Compose app.
type Detail struct {
	Project  string          `json:"project"`
	Services []ServiceStatus `json:"services"`
}

// ServiceStatus is one container of an app.
type ServiceStatus struct {
	Name      string `json:"name"`
	Container string `json:"container"`
	State     string `json:"state"`
	Health    string `json:"health"` // empty without a healthcheck
	Image     string `json:"image"`
	// Source is the registry mirror that served Image (LabelImageMirror);
	// empty when the image came from its own registry.
	Source string `json:"source"`
}

// ctr is what the wait and the status need of a container.
type ctr struct {
	id, name, service, image string
	state                    container.ContainerState
	health                   container.HealthStatus // "" without healthcheck
	exitCode                 int
	healthLog                string // output of the last health check
	labels                   map[string]string
}

// containers inspects the containers of a project (one-off ones excluded),
// ordered by service and name.
func (a *Applier) containers(ctx context.Context, project string) ([]ctr, error) {
	f := make(client.Filters).Add("label", api.ProjectLabel+"="+project).Add("label", api.OneoffLabel+"=False")
	res, err := a.docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list the containers of project %s: %w", project, err)
	}
	var out []ctr
	for _, s := range res.Items {
		c := ctr{id: s.ID, service: s.Labels[api.ServiceLabel], image: s.Image, state: s.State, labels: s.Labels}
		if len(s.Names) > 0 {
			c.name = strings.TrimPrefix(s.Names[0], "/")
		}
		in, err := a.docker.ContainerInspect(ctx, s.ID, client.ContainerInspectOptions{})
		if err != nil {
			if isNotFound(err) {
				continue // removed meanwhile
			}
			return nil, fmt.Errorf("inspect container %s: %w", c.name, err)
		}
		if st := in.Container.State; st != nil {
			c.state = st.Status
			c.exitCode = st.ExitCode
			if h := st.Health; h != nil {
				c.health = h.Status
				if n := len(h.Log); n > 0 && h.Log[n-1] != nil {
					c.healthLog = strings.TrimSpace(h.Log[n-1].Output)
				}
			}
		}
		if in.Container.Config != nil {
			c.labels = in.Container.Config.Labels
			c.image = in.Container.Config.Image
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].service != out[j].service {
			return out[i].service < out[j].service
		}
		return out[i].name < out[j].name
	})
	return out, nil
}

// waitError is a failed wait: the service and container at fault.
type waitError struct {
	service string
	c       *ctr // nil when the service has no container
	reason  string
}

func (e *waitError) Error() string {
	if e.c == nil {
		return fmt.Sprintf("service %q: %s", e.service, e.reason)
	}
	return fmt.Sprintf("service %q: container %s %s (%s)", e.service, e.c.name, e.reason, e.c.describe())
}

func (c *ctr) describe() string {
	s := "state " + string(c.state)
	if c.state == container.StateExited || c.state == container.StateDead {
		s += fmt.Sprintf(", exit code %d", c.exitCode)
	}
	if c.health != "" {
		s += ", health " + string(c.health)
	}
	return s
}

// oneShot reports whether another service waits for service to complete
// successfully: its container is then expected to exit with code 0.
func oneShot(p *types.Project, service string) bool {
	for _, s := range p.Services {
		if d, ok := s.DependsOn[service]; ok && d.Condition == types.ServiceConditionCompletedSuccessfully {
			return true
		}
	}
	return false
}

// wait waits until every service of the project has its containers
// running, and healthy where they have a healthcheck, within timeout.
// It fails as soon as a container exited (other than a one-shot service
// that completed successfully) or is unhealthy.
func (a *Applier) wait(parent context.Context, p *types.Project, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	for {
		pending, err := a.check(ctx, p)
		if err != nil {
			var we *waitError
			if errors.As(err, &we) {
				return err
			}
			if ctx.Err() == nil {
				return err
			}
		}
		if pending == nil && err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			if parent.Err() != nil {
				return fmt.Errorf("wait for project %s: %w", p.Name, parent.Err())
			}
			if pending != nil {
				pending.reason = fmt.Sprintf("is not running and healthy after %s", timeout)
				if pending.c == nil {
					pending.reason = fmt.Sprintf("has no container after %s", timeout)
				}
				return pending
			}
			return fmt.Errorf("wait for project %s: %w", p.Name, ctx.Err())
		case <-time.After(a.pollInterval):
		}
	}
}

// settle is the wait an app asks for: for a Compose app that sets no
// wait (NoWait), only a look at its containers once started, which fails
// when one already exited or is unhealthy; else the full wait, within the
// app's timeout.
func (a *Applier) settle(ctx context.Context, p *types.Project, app state.App) error {
	if app.Compose != nil && app.Compose.NoWait {
		_, err := a.check(ctx, p)
		return err
	}
	return a.wait(ctx, p, a.waitTimeout(app))
}

// waitTimeout is the app's own timeout, else the applier's.
func (a *Applier) waitTimeout(app state.App) time.Duration {
	if app.Compose != nil && app.Compose.Timeout > 0 {
		return app.Compose.Timeout
	}
	return a.opts.WaitTimeout
}

// check looks at the containers of the project once. It returns a
// *waitError error for a container that failed, and the first container
// (or service) that is not ready yet as pending, nil when all are.
func (a *Applier) check(ctx context.Context, p *types.Project) (pending *waitError, err error) {
	cs, err := a.containers(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	for _, name := range p.ServiceNames() {
		s := p.Services[name]
		want := s.GetScale()
		n := 0
		for i := range cs {
			c := &cs[i]
			if c.service != name {
				continue
			}
			n++
			switch {
			case c.state == container.StateExited && c.exitCode == 0 && oneShot(p, name):
				// completed, as expected
			case c.state == container.StateExited || c.state == container.StateDead:
				return nil, &waitError{service: name, c: c, reason: "exited"}
			case c.health == container.Unhealthy:
				return nil, &waitError{service: name, c: c, reason: "is unhealthy"}
			case c.state != container.StateRunning || (c.health != "" && c.health != container.Healthy):
				if pending == nil {
					pending = &waitError{service: name, c: c}
				}
			}
		}
		if n < want && pending == nil {
			pending = &waitError{service: name}
		}
	}
	return pending, nil
}

// describeFailure adds to err, when it is about a service, the last lines
// of the service's log and of its last health check, and otherwise the
// states of the project's containers.
func (a *Applier) describeFailure(ctx context.Context, p *types.Project, err error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var we *waitError
	if !errors.As(err, &we) {
		// compose up failed: show every container that is not fine.
		cs, lerr := a.containers(ctx, p.Name)
		if lerr != nil {
			return err
		}
		var bad []string
		for i := range cs {
			c := &cs[i]
			if c.state != container.StateRunning || c.health == container.Unhealthy {
				bad = append(bad, fmt.Sprintf("service %q: container %s (%s)%s", c.service, c.name, c.describe(), a.logTail(ctx, c)))
			}
		}
		if len(bad) == 0 {
			return err
		}
		return fmt.Errorf("%w; %s", err, strings.Join(bad, "; "))
	}
	if we.c == nil {
		return err
	}
	return fmt.Errorf("%w%s", err, a.logTail(ctx, we.c))
}

// logTail formats the last health check output and the last log lines of
// a container, for an error message.
func (a *Applier) logTail(ctx context.Context, c *ctr) string {
	var b strings.Builder
	if c.healthLog != "" {
		fmt.Fprintf(&b, "; last health check: %s", c.healthLog)
	}
	lines, err := a.lastLogLines(ctx, c.id, logLines)
	switch {
	case err != nil:
		fmt.Fprintf(&b, "; its log could not be read: %v", err)
	case len(lines) == 0:
		b.WriteString("; its log is empty")
	default:
		fmt.Fprintf(&b, "; last %d log lines:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	return b.String()
}

// lastLogLines returns the last n lines of a container's log, stdout and
// stderr interleaved.
func (a *Applier) lastLogLines(ctx context.Context, id string, n int) ([]string, error) {
	in, err := a.docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return nil, err
	}
	rc, err := a.docker.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Tail: fmt.Sprint(n)})
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var buf bytes.Buffer
	lim := io.LimitReader(rc, 1<<20)
	if in.Container.Config != nil && in.Container.Config.Tty {
		_, err = io.Copy(&buf, lim)
	} else {
		_, err = stdcopy.StdCopy(&buf, &buf, lim)
	}
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return nil, nil
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines, nil
}

// detail returns the AppStatus.Detail of a project: its containers.
func (a *Applier) detail(ctx context.Context, project string) json.RawMessage {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	d := Detail{Project: project, Services: []ServiceStatus{}}
	cs, err := a.containers(ctx, project)
	if err == nil {
		for _, c := range cs {
			d.Services = append(d.Services, ServiceStatus{Name: c.service, Container: c.name, State: string(c.state), Health: string(c.health), Image: c.image, Source: c.labels[LabelImageMirror]})
		}
	}
	b, _ := json.Marshal(d)
	return b
}

func isNotFound(err error) bool { return cerrdefs.IsNotFound(err) }
