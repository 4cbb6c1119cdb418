package rollout

import "errors"

// ErrNoCreated means a release has a rollout plan but no valid signed
// created time (the org.opencontainers.image.created annotation of its
// manifest): its waves cannot be opened, so it is not adopted.
var ErrNoCreated = errors.New("release has a rollout plan but no created time")
