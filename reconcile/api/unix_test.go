//go:build unix

package api

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestSocketMode(t *testing.T) {
	// Whatever the umask, nobody else may ever reach the socket.
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	sock := serveUnix(t, NewServer(newFakeAgent(), nil, nil))
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		t.Errorf("type = %v", fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("mode = %#o, want 0600", perm)
	}
	assertOnlySocket(t, filepath.Dir(sock))
}

// assertOnlySocket checks that dir holds berth.sock and nothing else (no
// temporary folder left behind).
func assertOnlySocket(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "berth.sock" {
		t.Errorf("folder holds %v", names)
	}
}

// staleSocket leaves a socket at path that nobody listens on, as an agent
// killed with SIGKILL does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := net.Dial("unix", path); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial stale socket: %v", err)
	}
}

func TestServeUnixLifecycle(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, sock string)
		wantErr string // ServeUnix must refuse to start
		check   func(t *testing.T, sock string)
	}{
		{name: "fresh"},
		{name: "stale socket is replaced", prepare: staleSocket},
		{name: "live socket is an error",
			prepare: func(t *testing.T, sock string) {
				l, err := net.Listen("unix", sock)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
			},
			wantErr: "another agent is listening on"},
		{name: "regular file is left alone",
			prepare: func(t *testing.T, sock string) {
				if err := os.WriteFile(sock, []byte("precious"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: "exists and is not a socket",
			check: func(t *testing.T, sock string) {
				if b, err := os.ReadFile(sock); err != nil || string(b) != "precious" {
					t.Errorf("file = %q, %v", b, err)
				}
			}},
		{name: "missing folder", prepare: func(t *testing.T, sock string) { os.Remove(filepath.Dir(sock)) },
			wantErr: "no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "run", "berth.sock")
			if err := os.Mkdir(filepath.Dir(sock), 0o755); err != nil {
				t.Fatal(err)
			}
			if tt.prepare != nil {
				tt.prepare(t, sock)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- NewServer(newFakeAgent(), nil, nil).ServeUnix(ctx, sock) }()
			if tt.wantErr != "" {
				err := <-done
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ServeUnix = %v, want an error with %q", err, tt.wantErr)
				}
				if tt.check != nil {
					tt.check(t, sock)
				}
				return
			}
			waitForSocket(t, sock, done)
			if _, err := NewClient(sock).Status(ctx); err != nil {
				t.Fatalf("status: %v", err)
			}
			fi, err := os.Lstat(sock)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("socket: %v, %v", fi, err)
			}
			assertOnlySocket(t, filepath.Dir(sock))
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("ServeUnix: %v", err)
			}
			if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket left behind after cancel: %v", err)
			}
			entries, _ := os.ReadDir(filepath.Dir(sock))
			if len(entries) != 0 {
				t.Errorf("folder not clean: %v", entries)
			}
		})
	}
}

// A socket that another agent put in place after ours is not removed.
func TestServeUnixKeepsAReplacedSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "berth.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(newFakeAgent(), nil, nil).ServeUnix(ctx, sock) }()
	waitForSocket(t, sock, done)
	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}
	other, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Errorf("the other agent's socket was removed: %v", err)
	}
}

func TestClientNoAgent(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	staleSocket(t, stale)
	for name, sock := range map[string]string{
		"missing socket":     filepath.Join(dir, "missing.sock"),
		"missing folder":     filepath.Join(dir, "nope", "berth.sock"),
		"connection refused": stale,
	} {
		t.Run(name, func(t *testing.T) {
			c := NewClient(sock)
			_, err := c.Status(context.Background())
			if !errors.Is(err, ErrNoAgent) {
				t.Fatalf("Status = %v, want ErrNoAgent", err)
			}
			if !strings.Contains(err.Error(), sock) {
				t.Errorf("error does not name the socket: %v", err)
			}
			if err := c.Suspend(context.Background(), "app"); !errors.Is(err, ErrNoAgent) {
				t.Errorf("Suspend = %v", err)
			}
			if _, err := c.Reconcile(context.Background(), "", ReconcileOptions{}); !errors.Is(err, ErrNoAgent) {
				t.Errorf("Reconcile = %v", err)
			}
		})
	}
}
