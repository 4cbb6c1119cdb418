package compose

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/docker/cli/cli/command"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/context/docker"
	"github.com/docker/compose/v5/pkg/api"
	composesdk "github.com/docker/compose/v5/pkg/compose"
	"github.com/moby/moby/client"
)

// newComposeService creates the Compose SDK's service on the API client dc,
// without the Docker CLI's environment: no ~/.docker/config.json (no
// credentials, proxies or contexts: berth pulls images itself), no
// terminal, no prompt (a question, such as whether to recreate a volume
// whose configuration changed, is answered no and logged), and its
// progress events go to the debug log.
func newComposeService(dc client.APIClient, host string, log *slog.Logger) (api.Compose, error) {
	dockerCli, err := command.NewDockerCli(
		command.WithAPIClient(dc),
		command.WithCombinedStreams(io.Discard),
		command.WithInputStream(io.NopCloser(strings.NewReader(""))),
	)
	if err != nil {
		return nil, fmt.Errorf("compose: %w", err)
	}
	cli := &sdkCli{DockerCli: dockerCli, client: dc, host: host, config: configfile.New("")}
	svc, err := composesdk.NewComposeService(cli,
		composesdk.WithStreams(io.Discard, io.Discard, strings.NewReader("")),
		composesdk.WithContextInfo(contextInfo{}),
		composesdk.WithProxyConfig(map[string]string{}),
		composesdk.WithPrompt(func(message string, defaultValue bool) (bool, error) {
			log.Warn("compose: answering no to a question of the Compose SDK", "question", message)
			return false, nil
		}),
		composesdk.WithEventProcessor(eventLog{log: log}),
	)
	if err != nil {
		return nil, fmt.Errorf("compose: %w", err)
	}
	return svc, nil
}

// sdkCli is the command.Cli the SDK gets: a DockerCli that is never
// initialised from flags, with what initialising would have read from the
// environment replaced by fixed values. Every method of DockerCli that
// would initialise it is overridden: uninitialised, DockerCli.Client exits
// the process.
type sdkCli struct {
	*command.DockerCli
	client client.APIClient
	host   string
	config *configfile.ConfigFile
}

func (c *sdkCli) Client() client.APIClient           { return c.client }
func (c *sdkCli) ConfigFile() *configfile.ConfigFile { return c.config }
func (c *sdkCli) ServerInfo() command.ServerInfo {
	return command.ServerInfo{OSType: "linux"}
}
func (c *sdkCli) CurrentVersion() string         { return c.Client().ClientVersion() }
func (c *sdkCli) BuildKitEnabled() (bool, error) { return false, nil }
func (c *sdkCli) CurrentContext() string         { return command.DefaultContextName }
func (c *sdkCli) DockerEndpoint() docker.Endpoint {
	return docker.Endpoint{EndpointMeta: docker.EndpointMeta{Host: c.host}}
}

// contextInfo is the SDK's view of the Docker context: the default one, a
// Linux engine, no BuildKit (berth never builds).
type contextInfo struct{}

func (contextInfo) CurrentContext() string         { return command.DefaultContextName }
func (contextInfo) ServerOSType() string           { return "linux" }
func (contextInfo) BuildKitEnabled() (bool, error) { return false, nil }

// eventLog sends the SDK's progress events to the debug log.
type eventLog struct{ log *slog.Logger }

func (e eventLog) Start(_ context.Context, operation string) {
	e.log.Debug("compose: sdk operation", "operation", operation)
}

func (e eventLog) On(events ...api.Resource) {
	if !e.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	for _, ev := range events {
		if ev.Status == api.Working && ev.Text != api.StatusPulling {
			continue
		}
		e.log.Debug("compose: sdk event", "resource", ev.ID, "text", ev.Text, "details", ev.Details, "status", ev.StatusText())
	}
}

// Done does not log its flag: v5.5.1 passes err != nil as success.
func (e eventLog) Done(operation string, _ bool) {
	e.log.Debug("compose: sdk operation done", "operation", operation)
}
