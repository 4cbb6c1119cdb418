package api

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/policy/inhibit"
)

// TestInhibitRoutes sets, lists and releases inhibitors through the
// client and the unix socket: the files land in the agent's state folder,
// where a file written by hand shows up too.
func TestInhibitRoutes(t *testing.T) {
	agent := newFakeAgent()
	agent.status.StateDir = t.TempDir()
	c := NewClient(serveUnix(t, NewServer(agent, nil, nil)))
	ctx := context.Background()

	before := time.Now()
	in, err := c.Inhibit(ctx, "press", 30*time.Minute, "batch running", "")
	if err != nil {
		t.Fatal(err)
	}
	if in.App != "press" || in.By != "api" || in.Reason != "batch running" ||
		in.Until.Before(before.Add(30*time.Minute-time.Second)) || in.Until.After(time.Now().Add(30*time.Minute)) {
		t.Errorf("Inhibit = %+v", in)
	}
	file := filepath.Join(agent.status.StateDir, "inhibit", "press.json")
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("no inhibitor file: %v", err)
	}
	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if err := os.WriteFile(filepath.Join(agent.status.StateDir, "inhibit", "web.json"), []byte(`{"until":"`+until+`","by":"container"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(agent.status.StateDir, "inhibit", "notes.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := c.Inhibitors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Inhibitors) != 2 || l.Inhibitors[0].App != "press" || l.Inhibitors[1].By != "container" || len(l.Problems) != 1 || l.Problems[0].File != "notes.txt" {
		t.Errorf("Inhibitors = %+v", l)
	}

	for _, tc := range []struct {
		app  string
		d    time.Duration
		want string
	}{
		{"Press", time.Minute, "app name"},
		{"press", -time.Minute, "give a duration"},
		{"press", inhibit.MaxFor + time.Hour, "at most 168h"},
	} {
		_, err := c.Inhibit(ctx, tc.app, tc.d, "", "")
		var ae *Error
		if !errors.As(err, &ae) || ae.StatusCode != http.StatusBadRequest || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Inhibit(%s, %v) = %v, want 400 saying %q", tc.app, tc.d, err, tc.want)
		}
	}

	if ok, err := c.Release(ctx, "press"); !ok || err != nil {
		t.Errorf("Release = %v, %v", ok, err)
	}
	if ok, err := c.Release(ctx, "press"); ok || err != nil {
		t.Errorf("Release again = %v, %v", ok, err)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("inhibitor file still there: %v", err)
	}
	if l, err := c.Inhibitors(ctx); err != nil || len(l.Inhibitors) != 1 {
		t.Errorf("after release: %+v, %v", l, err)
	}
}
