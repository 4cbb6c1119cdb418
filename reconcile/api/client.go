package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"syscall"

	"github.com/berth-dev/berth/reconcile/store"
)

// baseURL is the URL of the agent behind the socket; the host is not used.
const baseURL = "http://berth"

// maxAnswer bounds the answers the client reads.
const maxAnswer = 64 << 20

// Client talks to the agent over its unix socket. Its methods return an
// error wrapping ErrNoAgent when no agent listens, and an *Error for the
// agent's error answers. Reconcile and Rollback wait for the agent to finish:
// bound them with the context.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client of the agent listening on the unix socket at
// socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", socket)
			if err != nil && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED)) {
				return nil, fmt.Errorf("%w: %w", ErrNoAgent, err)
			}
			return c, err
		},
		MaxIdleConns: 1,
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr}}
}

// Error is an error answer of the agent. It wraps ErrUnknownSource for 404
// and ErrConflict for 409.
type Error struct {
	// StatusCode is the HTTP status of the answer.
	StatusCode int
	// Message is the agent's error message.
	Message string
}

// Error returns the agent's message.
func (e *Error) Error() string { return e.Message }

// Unwrap returns the sentinel error that StatusCode stands for, or nil.
func (e *Error) Unwrap() error {
	switch e.StatusCode {
	case http.StatusNotFound:
		return ErrUnknownSource
	case http.StatusConflict:
		return ErrConflict
	}
	return nil
}

// Status returns the agent's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	if err := c.do(ctx, http.MethodGet, "/status", nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// History returns the revisions of source, newest first.
func (c *Client) History(ctx context.Context, source string) ([]store.Revision, error) {
	var h []store.Revision
	if err := c.do(ctx, http.MethodGet, "/history/"+url.PathEscape(source), nil, &h); err != nil {
		return nil, err
	}
	return h, nil
}

// Reconcile reconciles source, or every source when source is "", and
// returns the results once done. Failed reconciles are results, not errors:
// see ReconcileResult.Failed.
func (c *Client) Reconcile(ctx context.Context, source string, o ReconcileOptions) ([]ReconcileResult, error) {
	q := url.Values{}
	if source != "" {
		q.Set("source", source)
	}
	if o.IgnoreWindows {
		q.Set("ignoreWindows", "true")
	}
	var res []ReconcileResult
	if err := c.do(ctx, http.MethodPost, "/reconcile", q, &res); err != nil {
		return nil, err
	}
	return res, nil
}

// Suspend stops reconciling source.
func (c *Client) Suspend(ctx context.Context, source string) error {
	return c.do(ctx, http.MethodPost, "/suspend/"+url.PathEscape(source), nil, nil)
}

// Resume reconciles source again.
func (c *Client) Resume(ctx context.Context, source string) error {
	return c.do(ctx, http.MethodPost, "/resume/"+url.PathEscape(source), nil, nil)
}

// Rollback switches source back to the revision digest, or to the previous
// applied revision when digest is "".
func (c *Client) Rollback(ctx context.Context, source, digest string) (ReconcileResult, error) {
	q := url.Values{}
	if digest != "" {
		q.Set("digest", digest)
	}
	var res ReconcileResult
	err := c.do(ctx, http.MethodPost, "/rollback/"+url.PathEscape(source), q, &res)
	return res, err
}

// do sends a request without body and decodes the JSON answer into out
// (when not nil).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, out any) error {
	u := baseURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, ErrNoAgent) {
			return fmt.Errorf("%w (nothing listens on %s)", ErrNoAgent, c.socket)
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("%s %s: %w", method, path, ctxErr)
		}
		return fmt.Errorf("agent at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var eb errorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
			return &Error{StatusCode: resp.StatusCode, Message: eb.Error}
		}
		return fmt.Errorf("%s %s: agent answered %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}
