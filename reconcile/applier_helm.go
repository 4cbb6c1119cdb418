//go:build !berth_nohelm

package reconcile

import (
	"context"

	"github.com/berth-dev/berth/apply/helm"
	"github.com/berth-dev/berth/reconcile/config"
)

var (
	_ Applier  = (*helm.Applier)(nil)
	_ Watcher  = (*helm.Applier)(nil)
	_ Reporter = (*helm.Applier)(nil)
)

var helmMaker = applierMaker{
	kind:    "helm",
	linked:  true,
	enabled: func(cfg *config.Config) bool { return cfg.Apply.Helm.Enabled },
	new: func(_ context.Context, cfg *config.Config, e applierEnv) (Applier, func() error, error) {
		o := cfg.Apply.Helm
		a, err := helm.New(helm.Options{Kubeconfig: o.Kubeconfig, ValuesDir: o.ValuesDir, DockerConfig: e.dockerConfig, CAFile: e.caFile, PlainHTTP: e.plainHTTP, Mirrors: e.mirrors, Log: e.log})
		if err != nil {
			return nil, nil, err
		}
		return a, nil, nil
	},
	probe: func(ctx context.Context, cfg *config.Config) error {
		return helm.Probe(ctx, cfg.Apply.Helm.Kubeconfig, probeTimeout)
	},
}
