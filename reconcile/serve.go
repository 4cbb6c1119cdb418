package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/config"
)

// Serve runs the agent until ctx ends: the local API on the unix socket
// (and on TCP when configured), the reconcile loops, the remote-write
// reporter when report.prometheus is set, and systemd notifications
// (READY=1 once every source was attempted, STOPPING=1 at the end).
func Serve(ctx context.Context, a *Agent, cfg *config.Config, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rep, err := newReporter(a, cfg, log)
	if err != nil {
		return err
	}
	var apiAgent api.Agent = a
	var servers sync.WaitGroup
	if rep != nil {
		// Reporting runs beside reconciling and never holds it up.
		apiAgent = withReport{a, rep}
		servers.Go(func() { rep.Run(ctx) })
	}
	srv := api.NewServer(apiAgent, a.metrics, log)
	errc := make(chan error, 2)
	servers.Go(func() { errc <- srv.ServeUnix(ctx, cfg.Socket) })
	if cfg.Listen != "" {
		servers.Go(func() { errc <- srv.ServeTCP(ctx, cfg.Listen) })
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Run(ctx, func() {
			log.Info("agent ready", "sources", len(a.order), "socket", cfg.Socket)
			if _, err := api.NotifyReady(); err != nil {
				log.Warn("systemd notification failed", "error", err)
			}
			_, _ = api.NotifyStatus(fmt.Sprintf("tracking %d sources", len(a.order)))
		})
	}()
	select {
	case <-ctx.Done():
	case err = <-errc:
		if err != nil {
			err = fmt.Errorf("local API: %w", err)
		}
		cancel()
	}
	_, _ = api.NotifyStopping()
	<-done
	servers.Wait() // the unix server removes its socket on the way out
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}
