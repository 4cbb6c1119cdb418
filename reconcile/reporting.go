package reconcile

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/config"
	"github.com/berth-dev/berth/reconcile/report"
)

// ReportQueueDir is the folder of the reporter's on-disk queue in the state
// folder.
const ReportQueueDir = "report/queue"

// newReporter returns the reporter report.prometheus configures, pushing
// the agent's metrics; nil when the configuration has none.
func newReporter(a *Agent, cfg *config.Config, log *slog.Logger) (*report.Reporter, error) {
	r := cfg.Report.Prometheus
	if r == nil {
		return nil, nil
	}
	id, labels, err := deviceIdentity(cfg)
	if err != nil {
		return nil, fmt.Errorf("report.prometheus: %w", err)
	}
	o := report.Options{
		URL: r.RemoteWrite, Interval: r.Interval, CAFile: r.CAFile, Insecure: r.Insecure,
		BearerTokenFile: r.BearerTokenFile,
		QueueDir:        filepath.Join(cfg.StateDir, filepath.FromSlash(ReportQueueDir)),
		MaxAge:          r.Queue.MaxAge, MaxSize: r.Queue.MaxSize,
		Device: id, Labels: labels, Metrics: a.metrics,
		Log: log.With("component", "report"), UserAgent: "berth-agent/" + a.version,
	}
	if b := r.BasicAuth; b != nil {
		o.BasicAuth = &report.BasicAuth{Username: b.Username, PasswordFile: b.PasswordFile}
	}
	rep, err := report.New(o)
	if err != nil {
		return nil, fmt.Errorf("report.prometheus: %w", err)
	}
	return rep, nil
}

// deviceIdentity is the device's id and labels (device: in agent.yaml).
func deviceIdentity(cfg *config.Config) (string, map[string]string, error) {
	d, err := cfg.Device.Identity()
	if err != nil {
		return "", nil, err
	}
	return d.ID, d.Labels, nil
}

// withReport is the agent as the local API sees it when it reports: its
// status carries the reporter's.
type withReport struct {
	*Agent
	rep *report.Reporter
}

func (w withReport) Status() api.Status {
	st := w.Agent.Status()
	rs := w.rep.Status()
	st.Report = &rs
	return st
}
