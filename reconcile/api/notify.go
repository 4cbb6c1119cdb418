package api

import (
	"strings"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notify sends state (for example "READY=1") to systemd's notification
// socket and reports whether it was sent. Without NOTIFY_SOCKET (not started
// by systemd with Type=notify) it does nothing and returns false, nil.
func Notify(state string) (bool, error) {
	return daemon.SdNotify(false, state)
}

// NotifyReady tells systemd that the agent has started (READY=1).
func NotifyReady() (bool, error) {
	return Notify(daemon.SdNotifyReady)
}

// NotifyStatus sets the one-line status that systemctl status shows
// (STATUS=msg; line breaks become spaces).
func NotifyStatus(msg string) (bool, error) {
	return Notify("STATUS=" + strings.ReplaceAll(strings.ReplaceAll(msg, "\r", " "), "\n", " "))
}

// NotifyStopping tells systemd that the agent is stopping (STOPPING=1).
func NotifyStopping() (bool, error) {
	return Notify(daemon.SdNotifyStopping)
}
