package progress

import (
	"fmt"
	"net/url"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"

	"github.com/berth-dev/berth/internal/promclient"
)

// ClientOptions say how to reach Prometheus, with credentials like the
// agent's report.prometheus.
type ClientOptions struct {
	// URL is Prometheus' base URL, such as https://prometheus.acme.example
	// (the HTTP API is under /api/v1).
	URL string
	// CAFile is a PEM bundle trusted besides the system's roots.
	CAFile string
	// BearerTokenFile holds a bearer token.
	BearerTokenFile string
	// Username and PasswordFile are basic-auth credentials.
	Username, PasswordFile string
	// Timeout bounds a query. Default 30s.
	Timeout time.Duration
	// UserAgent of the requests.
	UserAgent string
}

// NewClient returns the PromQL API of the Prometheus at o.URL.
func NewClient(o ClientOptions) (promv1.API, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("%w: Prometheus URL %q: want http(s)://HOST[:PORT][/PATH], without credentials", ErrQuery, o.URL)
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	hc, err := promclient.New(promclient.Config{
		CAFile: o.CAFile, Insecure: u.Scheme == "http", BearerTokenFile: o.BearerTokenFile,
		Username: o.Username, PasswordFile: o.PasswordFile, Timeout: o.Timeout, UserAgent: o.UserAgent,
	})
	if err != nil {
		return nil, err
	}
	c, err := promapi.NewClient(promapi.Config{Address: o.URL, Client: hc})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrQuery, err)
	}
	return promv1.NewAPI(c), nil
}
