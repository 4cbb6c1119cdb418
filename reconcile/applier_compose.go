//go:build !berth_nocompose

package reconcile

import (
	"context"

	"github.com/berth-dev/berth/apply/compose"
	"github.com/berth-dev/berth/reconcile/config"
)

var (
	_ Applier     = (*compose.Applier)(nil)
	_ ImageLoader = (*compose.Applier)(nil)
	_ Reporter    = (*compose.Applier)(nil)
)

var composeMaker = applierMaker{
	kind:    "compose",
	linked:  true,
	enabled: func(cfg *config.Config) bool { return cfg.Apply.Compose.Enabled },
	new: func(ctx context.Context, cfg *config.Config, e applierEnv) (Applier, func() error, error) {
		o := cfg.Apply.Compose
		a, err := compose.New(ctx, compose.Options{Host: o.Host, WaitTimeout: o.WaitTimeout, EnvDir: o.EnvDir, DockerConfig: e.dockerConfig, Mirrors: e.mirrors, Log: e.log})
		if err != nil {
			return nil, nil, err
		}
		return a, a.Close, nil
	},
	probe: func(ctx context.Context, cfg *config.Config) error {
		return compose.Probe(ctx, cfg.Apply.Compose.Host, probeTimeout)
	},
}
