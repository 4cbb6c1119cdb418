package report

import (
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/berth-dev/berth/reconcile/metrics"
)

// Defaults.
const (
	// DefaultInterval is how often the reporter gathers and sends.
	DefaultInterval = time.Minute
	// DefaultMaxAge is how long samples are kept queued.
	DefaultMaxAge = 24 * time.Hour
	// DefaultMaxSize caps the bytes the queue takes on disk.
	DefaultMaxSize = 64 << 20
	// DefaultRefresh is how long an unchanged value goes unsent: under
	// Prometheus' default lookback of 5 minutes, so that instant queries
	// always see every series of a reporting device.
	DefaultRefresh = 4 * time.Minute
	// MaxBackoff caps the wait between two attempts after failures (the
	// interval, when longer).
	MaxBackoff = 5 * time.Minute
	// maxBatchSamples caps the samples of one request when the queue
	// drains.
	maxBatchSamples = 20000
	// finalTimeout bounds the last push when the agent stops.
	finalTimeout = 3 * time.Second
)

// Options configure a Reporter.
type Options struct {
	// URL is the remote-write endpoint, such as
	// https://metrics.plant.local/api/v1/write (for Prometheus, the
	// /api/v1/write of one started with --web.enable-remote-write-receiver).
	URL string
	// Interval between two gathers. Default DefaultInterval.
	Interval time.Duration
	// Timeout bounds one request. Default: the interval, between 5s and 30s.
	Timeout time.Duration
	// CAFile is a PEM bundle trusted for the endpoint's certificate, besides
	// the system's.
	CAFile string
	// Insecure allows plain HTTP (an http:// URL needs it).
	Insecure bool
	// BearerTokenFile holds a bearer token, read at every request.
	BearerTokenFile string
	// BasicAuth sends a user name and a password read from a file at every
	// request.
	BasicAuth *BasicAuth
	// QueueDir is the folder of the on-disk queue (the agent uses
	// <stateDir>/report/queue).
	QueueDir string
	// MaxAge and MaxSize bound the queue. Defaults DefaultMaxAge and
	// DefaultMaxSize.
	MaxAge  time.Duration
	MaxSize int64
	// Refresh is how long a series whose value did not change goes unsent.
	// Default DefaultRefresh; negative: send every value at every gather.
	Refresh time.Duration
	// Device is the device id, added as the label device to every series.
	Device string
	// Labels are the device's labels, added to every series under the names
	// labels.PrometheusName gives them.
	Labels map[string]string
	// Metrics are the agent's metrics: what is gathered, and where the
	// reporter records berth_device_info and its own series.
	Metrics *metrics.Metrics
	// Log receives the reporter's logs. Default slog.Default().
	Log *slog.Logger
	// UserAgent of the requests. Default "berth-agent".
	UserAgent string
	// Now is the clock (tests). Default time.Now.
	Now func() time.Time
}

// BasicAuth is a user name and the file that holds the password.
type BasicAuth struct {
	Username     string
	PasswordFile string
}

// withDefaults checks o and fills in its defaults.
func (o Options) withDefaults() (*Options, error) {
	u, err := url.Parse(o.URL)
	switch {
	case err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
		return nil, fmt.Errorf("%w: remote-write URL %q: want http(s)://HOST[:PORT]/PATH", ErrOptions, Redact(o.URL))
	case u.User != nil:
		return nil, fmt.Errorf("%w: remote-write URL %s holds credentials: use basicAuth or bearerTokenFile", ErrOptions, Redact(o.URL))
	case u.Scheme == "http" && !o.Insecure:
		return nil, fmt.Errorf("%w: remote-write URL %s is plain HTTP: use https:// or set insecure", ErrOptions, o.URL)
	case u.Scheme == "https" && o.Insecure:
		return nil, fmt.Errorf("%w: insecure is for plain HTTP, but %s is https://", ErrOptions, o.URL)
	case o.BearerTokenFile != "" && o.BasicAuth != nil:
		return nil, fmt.Errorf("%w: give bearerTokenFile or basicAuth, not both", ErrOptions)
	case o.BasicAuth != nil && (o.BasicAuth.Username == "" || o.BasicAuth.PasswordFile == ""):
		return nil, fmt.Errorf("%w: basicAuth needs username and passwordFile", ErrOptions)
	case strings.TrimSpace(o.Device) == "":
		return nil, fmt.Errorf("%w: no device id: every series carries the label device", ErrOptions)
	case o.QueueDir == "":
		return nil, fmt.Errorf("%w: no queue folder", ErrOptions)
	case o.Metrics == nil:
		return nil, fmt.Errorf("%w: no metrics to report", ErrOptions)
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Timeout <= 0 {
		o.Timeout = min(max(o.Interval, 5*time.Second), 30*time.Second)
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.MaxSize <= 0 {
		o.MaxSize = DefaultMaxSize
	}
	if o.Refresh == 0 {
		o.Refresh = DefaultRefresh
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.UserAgent == "" {
		o.UserAgent = "berth-agent"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &o, nil
}

// Redact returns a URL with its user information and query removed, for
// logs and status.
func Redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "..."
	}
	return u.String()
}
