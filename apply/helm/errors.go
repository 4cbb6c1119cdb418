package helm

import (
	"errors"

	"github.com/berth-dev/berth/internal/errdef"
)

// Sentinel errors. Callers branch on them with errors.Is.
var (
	// ErrNoDigest refuses an OCI chart that berth.yaml does not pin to a
	// digest: the lock step writes digest: at push time.
	ErrNoDigest = errdef.Refusal("chart not locked to a digest")
	// ErrChartDigest refuses an OCI chart that no registry serves under the
	// digest berth.yaml pins, or whose content does not match it.
	ErrChartDigest = errdef.Refusal("chart digest mismatch")
	// ErrNotChart refuses an OCI artifact that is not a Helm chart (config
	// media type, chart layer), or a chart whose name or version differs
	// from what berth.yaml names.
	ErrNotChart = errdef.Refusal("not the Helm chart named")
	// ErrNotOwned refuses a release of that name that another source or
	// app, or no berth source at all, owns.
	ErrNotOwned = errors.New("release owned by someone else")
	// ErrNotReady is the failure of a release whose objects did not become
	// ready within the timeout.
	ErrNotReady = errors.New("release not ready")
)
