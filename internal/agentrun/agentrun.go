// Package agentrun runs the device agent (package reconcile) with the
// appliers linked into the binary. Only cmd/berth-agent imports it: the
// Compose and Helm SDKs cost every process that links them their package
// initialisation (tens of MiB of RSS before main), so cmd/berth's one-shot
// commands leave them out and `berth agent` runs berth-agent. Which
// appliers are linked is chosen with build tags in package reconcile:
// berth_nocompose (a Helm-only agent), berth_nohelm (a Compose-only one).
package agentrun

import (
	"context"
	"log/slog"

	"github.com/berth-dev/berth/reconcile"
	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/config"
)

// Runner runs the device agent; it implements internal/cli's Agent.
type Runner struct {
	// Version is reported by the agent's API and metrics.
	Version string
}

// Appliers names the appliers linked into this binary, in apply order.
func (Runner) Appliers() []string { return reconcile.LinkedAppliers() }

// Probe warns of each enabled applier whose Docker Engine or
// kube-apiserver does not answer (see reconcile.ProbeAppliers).
func (Runner) Probe(ctx context.Context, cfg *config.Config) []string {
	return reconcile.ProbeAppliers(ctx, cfg)
}

// Once reconciles every source of cfg once.
func (r Runner) Once(ctx context.Context, cfg *config.Config, log *slog.Logger) ([]api.ReconcileResult, error) {
	agent, closeAll, err := r.agent(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	return agent.RunOnce(ctx), nil
}

// Serve runs the agent until ctx ends (see reconcile.Serve).
func (r Runner) Serve(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	agent, closeAll, err := r.agent(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeAll()
	return reconcile.Serve(ctx, agent, cfg, log)
}

func (r Runner) agent(ctx context.Context, cfg *config.Config, log *slog.Logger) (*reconcile.Agent, func(), error) {
	appliers, closeAppliers, err := reconcile.NewAppliers(ctx, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	agent, err := reconcile.New(cfg, reconcile.Options{Appliers: appliers, Log: log, Version: r.Version})
	if err != nil {
		closeAppliers()
		return nil, nil, err
	}
	return agent, closeAppliers, nil
}
