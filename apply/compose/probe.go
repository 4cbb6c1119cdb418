package compose

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/moby/moby/client"
)

// Probe checks that the Docker Engine at host (Options.Host's defaults
// apply: $DOCKER_HOST, else DefaultHost) answers a ping within timeout;
// the error names the address it tried.
func Probe(ctx context.Context, host string, timeout time.Duration) error {
	if host == "" {
		host = os.Getenv("DOCKER_HOST")
	}
	if host == "" {
		host = DefaultHost
	}
	dc, err := client.New(client.WithHost(host))
	if err != nil {
		return fmt.Errorf("docker host %s: %w", host, err)
	}
	defer dc.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := dc.Ping(ctx, client.PingOptions{}); err != nil {
		return fmt.Errorf("the Docker Engine at %s does not answer: %w", host, err)
	}
	return nil
}
