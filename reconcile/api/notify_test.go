//go:build unix

package api

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

func TestNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)

	tests := []struct {
		name string
		send func() (bool, error)
		want string
	}{
		{"ready", NotifyReady, "READY=1"},
		{"status", func() (bool, error) { return NotifyStatus("2 sources, app: applied v1.2.0") }, "STATUS=2 sources, app: applied v1.2.0"},
		{"status on one line", func() (bool, error) { return NotifyStatus("refused:\nno signature") }, "STATUS=refused: no signature"},
		{"stopping", NotifyStopping, "STOPPING=1"},
		{"raw", func() (bool, error) { return Notify("WATCHDOG=1") }, "WATCHDOG=1"},
	}
	buf := make([]byte, 4096)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sent, err := tt.send()
			if err != nil || !sent {
				t.Fatalf("sent = %v, %v", sent, err)
			}
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(buf[:n]); got != tt.want {
				t.Errorf("datagram = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNotifyWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	sent, err := Notify("READY=1")
	if sent || err != nil {
		t.Errorf("Notify = %v, %v; want a no-op", sent, err)
	}
	for _, f := range []func() (bool, error){NotifyReady, NotifyStopping, func() (bool, error) { return NotifyStatus("x") }} {
		if sent, err := f(); sent || err != nil {
			t.Errorf("sent = %v, %v; want a no-op", sent, err)
		}
	}
}

func TestNotifyNobodyListens(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone.sock"))
	if sent, err := NotifyReady(); sent || err == nil {
		t.Error("no error when the notification socket is missing")
	}
}
