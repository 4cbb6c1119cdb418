package config

import (
	"math"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/internal/yamlstrict"
)

// Report configures how the device reports its status:
//
//	report:
//	  prometheus:
//	    remoteWrite: https://metrics.plant.local/api/v1/write
//	    interval: 1m                               # default 1m, 1s to 1h
//	    caFile: /etc/berth/metrics-ca.pem          # or insecure: true for plain HTTP
//	    bearerTokenFile: /etc/berth/metrics.token  # or basicAuth: {username, passwordFile}
//	    queue: {maxAge: 24h, maxSize: 64MiB}       # kept on disk while offline
type Report struct {
	// Prometheus, when set, pushes the agent's metrics by remote-write
	// (see package report).
	Prometheus *PrometheusReport
}

// PrometheusReport is report.prometheus.
type PrometheusReport struct {
	// RemoteWrite is the remote-write endpoint, an http(s) URL without
	// credentials.
	RemoteWrite string
	// Interval between two pushes. Default DefaultReportInterval.
	Interval time.Duration
	// CAFile is a PEM bundle trusted for the endpoint's certificate,
	// besides the system's.
	CAFile string
	// Insecure reaches an http:// endpoint (plain HTTP).
	Insecure bool
	// BearerTokenFile holds a bearer token, read at every push.
	BearerTokenFile string
	// BasicAuth sends a user name and a password read from a file.
	BasicAuth *BasicAuth
	// Queue bounds what is kept on disk while the endpoint is unreachable.
	Queue ReportQueue
}

// BasicAuth is a user name and the file that holds the password.
type BasicAuth struct {
	Username     string
	PasswordFile string
}

// ReportQueue bounds the on-disk queue of samples not yet sent.
type ReportQueue struct {
	// MaxAge drops samples older than this. Default DefaultReportMaxAge.
	MaxAge time.Duration
	// MaxSize caps the bytes on disk, oldest dropped first. Default
	// DefaultReportMaxSize.
	MaxSize int64
}

// Report defaults and limits.
const (
	DefaultReportInterval = time.Minute
	MaxReportInterval     = time.Hour
	DefaultReportMaxAge   = 24 * time.Hour
	MinReportMaxAge       = time.Minute
	DefaultReportMaxSize  = 64 << 20
	MinReportMaxSize      = 16 << 10
	MaxReportMaxSize      = 16 << 30
)

// report parses report.
func (p *parser) report(f fields, c *Config) {
	rf, _ := p.mapping(f, "", "report", "prometheus")
	if rf == nil {
		return
	}
	const path = "report.prometheus"
	pf, pn := p.mapping(rf, "report", "prometheus", "remoteWrite", "interval", "caFile", "insecure", "bearerTokenFile", "basicAuth", "queue")
	if pf == nil {
		return
	}
	r := &PrometheusReport{Interval: DefaultReportInterval, Queue: ReportQueue{MaxAge: DefaultReportMaxAge, MaxSize: DefaultReportMaxSize}}
	p.boolean(pf, path, "insecure", &r.Insecure)
	if _, ok := pf["remoteWrite"]; !ok {
		p.Missing(pn, pn, path, "remoteWrite", " (the remote-write URL, such as https://metrics.plant.local/api/v1/write)")
	} else if n, s, ok := p.StrField(pf, path, "remoteWrite"); ok && p.remoteWrite(n, path+".remoteWrite", s, r.Insecure) {
		r.RemoteWrite = s
	}
	if fv, ok := pf["interval"]; ok {
		if d, ok := p.Duration(fv.Val, path+".interval", MinInterval); ok {
			if d > MaxReportInterval {
				p.Errorf(fv.Val, path+".interval", "must be at most %v, got %q", MaxReportInterval, fv.Val.Value)
			} else {
				r.Interval = d
			}
		}
	}
	p.fileField(pf, path, "caFile", &r.CAFile)
	if _, ok := pf["caFile"]; ok && r.Insecure {
		p.Errorf(pf["insecure"].Key, path, "has both caFile and insecure: plain HTTP uses no certificate, remove one of them")
	}
	p.fileField(pf, path, "bearerTokenFile", &r.BearerTokenFile)
	if bf, bn := p.mapping(pf, path, "basicAuth", "username", "passwordFile"); bf != nil {
		r.BasicAuth = &BasicAuth{}
		bp := path + ".basicAuth"
		if _, ok := bf["username"]; !ok {
			p.Missing(bn, bn, bp, "username", "")
		} else if n, s, ok := p.StrField(bf, bp, "username"); ok {
			if s == "" || strings.ContainsAny(s, ":\r\n") {
				p.Errorf(n, bp+".username", "must be a user name without ':' or line breaks, got %q", s)
			}
			r.BasicAuth.Username = s
		}
		if _, ok := bf["passwordFile"]; !ok {
			p.Missing(bn, bn, bp, "passwordFile", " (a file that holds the password)")
		}
		p.fileField(bf, bp, "passwordFile", &r.BasicAuth.PasswordFile)
	}
	if _, ok := pf["basicAuth"]; ok {
		if _, tok := pf["bearerTokenFile"]; tok {
			p.Errorf(pf["basicAuth"].Key, path, "has both bearerTokenFile and basicAuth: give one of them")
		}
	}
	if qf, _ := p.mapping(pf, path, "queue", "maxAge", "maxSize"); qf != nil {
		qp := path + ".queue"
		if fv, ok := qf["maxAge"]; ok {
			if d, ok := p.Duration(fv.Val, qp+".maxAge", MinReportMaxAge); ok {
				r.Queue.MaxAge = d
			}
		}
		if fv, ok := qf["maxSize"]; ok {
			if n, ok := p.byteSize(fv.Val, qp+".maxSize"); ok {
				r.Queue.MaxSize = n
			}
		}
	}
	c.Report.Prometheus = r
}

// remoteWrite checks a remote-write URL against insecure.
func (p *parser) remoteWrite(n *yaml.Node, path, s string, insecure bool) bool {
	u, err := url.Parse(s)
	var msg string
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "":
		msg = "must be an http:// or https:// URL such as https://metrics.plant.local/api/v1/write, got " + strconv.Quote(redact(s))
	case u.User != nil:
		msg = "must not hold credentials: use bearerTokenFile or basicAuth"
	case u.Fragment != "" || strings.HasSuffix(s, "#"):
		msg = "must not have a #fragment"
	case u.Scheme == "http" && !insecure:
		msg = "is plain HTTP: use https://, or set insecure: true to send the metrics unencrypted"
	case u.Scheme == "https" && insecure:
		msg = "is https:// but insecure: true asks for plain HTTP: remove insecure, or use http://"
	case u.Port() != "" && !validPort(u.Port()):
		msg = "port must be a number from 1 to 65535, got " + strconv.Quote(u.Port())
	default:
		return true
	}
	p.Errorf(n, path, "%s", msg)
	return false
}

func validPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 1 && n <= 65535
}

// sizeRE matches a size such as 64MiB, 512KiB, 1GB or 1048576.
var sizeRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?$`)

var sizeUnits = map[string]float64{
	"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
}

// byteSize returns the value of a size: a number of bytes, or a number
// with a unit (KB, MB, GB; KiB, MiB, GiB), between MinReportMaxSize and
// MaxReportMaxSize.
func (p *parser) byteSize(n *yaml.Node, path string) (int64, bool) {
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!str" && n.ShortTag() != "!!int") {
		p.Errorf(n, path, "must be a size such as 64MiB, got %s", yamlstrict.Describe(n))
		return 0, false
	}
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(n.Value))
	if m == nil {
		p.Errorf(n, path, "must be a size such as 64MiB, 512KiB or 1GB (units B, KB, MB, GB, KiB, MiB, GiB), got %q", n.Value)
		return 0, false
	}
	f, err := strconv.ParseFloat(m[1], 64)
	v := f * sizeUnits[m[2]]
	if err != nil || math.IsInf(v, 0) || v < MinReportMaxSize || v > MaxReportMaxSize {
		p.Errorf(n, path, "must be between 16KiB and 16GiB, got %q", n.Value)
		return 0, false
	}
	return int64(v), true
}

// checkReport checks the files report.prometheus names: the CA file holds
// PEM certificates, the token and password files are readable and not
// empty.
func (c *Config) checkReport(add func(path, format string, args ...any)) {
	r := c.Report.Prometheus
	if r == nil {
		return
	}
	const path = "report.prometheus"
	checkTransport(add, path, "", r.CAFile)
	secrets := []struct{ path, file string }{{path + ".bearerTokenFile", r.BearerTokenFile}}
	if r.BasicAuth != nil {
		secrets = append(secrets, struct{ path, file string }{path + ".basicAuth.passwordFile", r.BasicAuth.PasswordFile})
	}
	for _, s := range secrets {
		if s.file == "" {
			continue
		}
		if data, err := readFile(s.file); err != nil {
			add(s.path, "%s", describe(err))
		} else if strings.TrimSpace(string(data)) == "" {
			add(s.path, "%s is empty", s.file)
		}
	}
}
