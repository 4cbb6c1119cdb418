package margo

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/berth-dev/berth/source/margo/outbox"
	"github.com/berth-dev/berth/source/margo/spec"
)

// Reporter sends deployment status posts through an on-disk queue: a post
// is queued durably first, then the queue is flushed in order, so that a
// WFM outage or a restart loses nothing and reorders nothing.
type Reporter struct {
	c *Client
	q *outbox.Queue
}

// NewReporter returns a Reporter sending with c through q.
func NewReporter(c *Client, q *outbox.Queue) *Reporter { return &Reporter{c: c, q: q} }

// Report validates st, queues it and flushes the queue. The error of the
// flush (the WFM unreachable...) is returned but st stays queued: call
// Flush later (every poll does).
func (r *Reporter) Report(ctx context.Context, st spec.DeploymentStatus) error {
	if err := st.Validate(); err != nil {
		return err
	}
	body, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if dropped, err := r.q.Push(st.DeploymentID, body); err != nil {
		return err
	} else if dropped > 0 {
		r.c.log.Warn("Margo status queue full: dropped the oldest status posts", "dropped", dropped)
	}
	return r.Flush(ctx)
}

// Flush sends the queued status posts in order. A post the WFM refuses for
// good (400, 404, 422: it would be refused again) is dropped and logged; a
// 403 or any retryable failure stops the flush with the post kept.
func (r *Reporter) Flush(ctx context.Context) error {
	sent, dropped, err := r.q.Flush(ctx, func(ctx context.Context, m outbox.Message) error {
		err := r.c.postStatusBody(ctx, m.Key, m.Body)
		var ae *APIError
		if errors.As(err, &ae) && !ae.Retryable {
			switch ae.Status {
			case http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity, http.StatusConflict:
				return fmt.Errorf("%w: %w", outbox.ErrDrop, err)
			}
		}
		return err
	})
	for _, d := range dropped {
		r.c.log.Error("Margo status post refused by the WFM; dropped", "error", d)
	}
	if sent > 0 {
		r.c.log.Debug("Margo status posts sent", "sent", sent, "queued", r.q.Len())
	}
	if err != nil {
		return fmt.Errorf("%d Margo status posts queued: %w", r.q.Len(), err)
	}
	return nil
}

// Pending returns the number of queued status posts.
func (r *Reporter) Pending() int { return r.q.Len() }

// SyncCapabilities sends caps when they differ from what st records as
// accepted (or always when force, as the first call after connecting must),
// and records them in st on success. It reports whether it sent them.
func (c *Client) SyncCapabilities(ctx context.Context, st *State, caps *spec.Capabilities, force bool) (bool, error) {
	raw, err := json.Marshal(caps)
	if err != nil {
		return false, err
	}
	sum := fmt.Sprintf("sha256:%x", sha256.Sum256(raw))
	if !force && sum == st.CapabilitiesDigest {
		return false, nil
	}
	if err := c.PutCapabilities(ctx, caps); err != nil {
		return false, err
	}
	st.CapabilitiesDigest = sum
	return true, nil
}

// RemovalStatus is the status of a deployment the manifest no longer
// lists, in state (spec.StateRemoving before the appliers prune it,
// spec.StateRemoved after), built from what State recorded since its YAML
// is gone. adopted is the manifestVersion of the manifest that removed it.
func RemovalStatus(id string, ds DeploymentState, deviceID, state string, adopted uint64) spec.DeploymentStatus {
	cs := make([]spec.ComponentStatus, 0, len(ds.Components))
	for _, c := range ds.Components {
		cs = append(cs, spec.ComponentStatus{Name: c, State: state})
	}
	return spec.NewStatus(id, deviceID, ds.Name, adopted, cs)
}
