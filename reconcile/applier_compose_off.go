//go:build berth_nocompose

package reconcile

import (
	"context"
	"fmt"

	"github.com/berth-dev/berth/reconcile/config"
)

var composeMaker = applierMaker{
	kind:    "compose",
	enabled: func(cfg *config.Config) bool { return cfg.Apply.Compose.Enabled },
	new: func(context.Context, *config.Config, applierEnv) (Applier, func() error, error) {
		return nil, nil, fmt.Errorf("%w (tag berth_nocompose): remove apply.compose from the configuration, or install the full berth-agent", ErrApplierNotLinked)
	},
}
