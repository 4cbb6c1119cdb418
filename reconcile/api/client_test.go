package api

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"
)

func TestClientRoundTrips(t *testing.T) {
	agent := newFakeAgent()
	c := NewClient(serveUnix(t, NewServer(agent, nil, nil)))
	ctx := context.Background()

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := agent.Status(); !reflect.DeepEqual(*st, want) {
		t.Errorf("Status =\n%+v\nwant\n%+v", *st, want)
	}

	h, err := c.History(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	if want := agent.Status().Sources[0].History; !reflect.DeepEqual(h, want) {
		t.Errorf("History = %+v, want %+v", h, want)
	}
	if h, err := c.History(ctx, "web"); err != nil || h == nil || len(h) != 0 {
		t.Errorf("History(web) = %#v, %v; want empty", h, err)
	}

	res, err := c.Reconcile(ctx, "", ReconcileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []ReconcileResult{resultApp, resultWeb}; !reflect.DeepEqual(res, want) {
		t.Errorf("Reconcile = %+v, want %+v", res, want)
	}
	if res[0].Failed() || !res[1].Failed() {
		t.Errorf("Failed = %v, %v", res[0].Failed(), res[1].Failed())
	}
	if res, err := c.Reconcile(ctx, "app", ReconcileOptions{}); err != nil || !reflect.DeepEqual(res, []ReconcileResult{resultApp}) {
		t.Errorf("Reconcile(app) = %+v, %v", res, err)
	}
	if res, err := c.Reconcile(ctx, "app", ReconcileOptions{IgnoreWindows: true}); err != nil || !reflect.DeepEqual(res, []ReconcileResult{resultApp}) {
		t.Errorf("Reconcile(app, ignoring windows) = %+v, %v", res, err)
	}

	if err := c.Suspend(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := c.Resume(ctx, "app"); err != nil {
		t.Fatal(err)
	}

	rb, err := c.Rollback(ctx, "app", "")
	if err != nil {
		t.Fatal(err)
	}
	if want := (ReconcileResult{Source: "app", Outcome: "rolled-back", Digest: digestA}); rb != want {
		t.Errorf("Rollback = %+v, want %+v", rb, want)
	}
	if rb, err := c.Rollback(ctx, "app", digestC); err != nil || rb.Digest != digestC {
		t.Errorf("Rollback(digest) = %+v, %v", rb, err)
	}

	rec, sus, rbs, _ := agent.calls()
	if want := []string{"", "app", "app ignoring windows"}; !reflect.DeepEqual(rec, want) {
		t.Errorf("reconciles = %q, want %q", rec, want)
	}
	if want := []suspendCall{{"app", true}, {"app", false}}; !reflect.DeepEqual(sus, want) {
		t.Errorf("suspends = %v, want %v", sus, want)
	}
	if want := []rollbackCall{{"app", ""}, {"app", digestC}}; !reflect.DeepEqual(rbs, want) {
		t.Errorf("rollbacks = %v, want %v", rbs, want)
	}
}

func TestClientErrors(t *testing.T) {
	c := NewClient(serveUnix(t, NewServer(newFakeAgent(), nil, nil)))
	ctx := context.Background()
	tests := []struct {
		name     string
		call     func() error
		wantCode int
		wantIs   error
		wantMsg  string
	}{
		{"history unknown", func() error { _, err := c.History(ctx, "nope"); return err },
			http.StatusNotFound, ErrUnknownSource, `unknown source "nope"`},
		{"reconcile unknown", func() error { _, err := c.Reconcile(ctx, "nope", ReconcileOptions{}); return err },
			http.StatusNotFound, ErrUnknownSource, `unknown source "nope"`},
		{"suspend unknown", func() error { return c.Suspend(ctx, "nope") },
			http.StatusNotFound, ErrUnknownSource, `unknown source "nope"`},
		{"resume unknown", func() error { return c.Resume(ctx, "nope") },
			http.StatusNotFound, ErrUnknownSource, `unknown source "nope"`},
		{"rollback unknown", func() error { _, err := c.Rollback(ctx, "nope", ""); return err },
			http.StatusNotFound, ErrUnknownSource, `unknown source "nope"`},
		{"rollback impossible", func() error { _, err := c.Rollback(ctx, "web", ""); return err },
			http.StatusConflict, ErrConflict, "rollback web: conflict: no earlier revision"},
		{"rollback bad digest", func() error { _, err := c.Rollback(ctx, "app", "md5:x"); return err },
			http.StatusBadRequest, nil, `bad digest "md5:x": unsupported digest algorithm`},
		{"reconcile error", func() error { _, err := c.Reconcile(ctx, "broken", ReconcileOptions{}); return err },
			http.StatusInternalServerError, nil, "write state: read-only file system"},
		{"odd source name", func() error { _, err := c.History(ctx, "a/b c?d"); return err },
			http.StatusNotFound, ErrUnknownSource, `unknown source "a/b c?d"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T) is not an *Error", err, err)
			}
			if e.StatusCode != tt.wantCode || err.Error() != tt.wantMsg {
				t.Errorf("error = %d %q, want %d %q", e.StatusCode, err.Error(), tt.wantCode, tt.wantMsg)
			}
			for _, sentinel := range []error{ErrUnknownSource, ErrConflict, ErrNoAgent} {
				if got, want := errors.Is(err, sentinel), sentinel == tt.wantIs; got != want {
					t.Errorf("errors.Is(err, %v) = %v", sentinel, got)
				}
			}
		})
	}
}

func TestClientContext(t *testing.T) {
	agent := newFakeAgent()
	c := NewClient(serveUnix(t, NewServer(agent, nil, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Reconcile(ctx, "slow", ReconcileOptions{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Reconcile = %v, want a deadline error", err)
	}
	// The agent's reconcile ends with the request.
	select {
	case <-agent.cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent's reconcile was not cancelled")
	}
}
