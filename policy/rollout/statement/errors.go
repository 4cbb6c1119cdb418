package statement

import "errors"

// ErrRegistry wraps registry failures while reading statements: the
// statements are then unknown (one may hide behind the failure), never
// "none".
var ErrRegistry = errors.New("registry error")
