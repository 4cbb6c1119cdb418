package progress

import "errors"

// ErrQuery is wrapped by the errors of a PromQL query that failed.
var ErrQuery = errors.New("prometheus query failed")

// ErrThreshold is wrapped by the errors of ParseThreshold.
var ErrThreshold = errors.New("invalid failure threshold")
