//go:build berth_nohelm

package reconcile

import (
	"context"
	"fmt"

	"github.com/berth-dev/berth/reconcile/config"
)

var helmMaker = applierMaker{
	kind:    "helm",
	enabled: func(cfg *config.Config) bool { return cfg.Apply.Helm.Enabled },
	new: func(context.Context, *config.Config, applierEnv) (Applier, func() error, error) {
		return nil, nil, fmt.Errorf("%w (tag berth_nohelm): remove apply.helm from the configuration, or install the full berth-agent", ErrApplierNotLinked)
	},
}
