package lock

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
)

// stubResolver resolves every reference to the sha256 of its text.
type stubResolver struct{}

func (stubResolver) Resolve(_ context.Context, ref string) (string, error) {
	sum := sha256.Sum256([]byte(ref))
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// recordingResolver is a stubResolver that records the references.
type recordingResolver struct {
	mu   sync.Mutex
	seen []string
}

func (r *recordingResolver) Resolve(ctx context.Context, ref string) (string, error) {
	r.mu.Lock()
	r.seen = append(r.seen, ref)
	r.mu.Unlock()
	return stubResolver{}.Resolve(ctx, ref)
}
