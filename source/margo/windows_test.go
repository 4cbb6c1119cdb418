package margo

import (
	"testing"
	"time"
)

func TestWindows(t *testing.T) {
	must := func(s string) Window {
		w, err := ParseWindow(s)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	ws := Windows{Polling: []Window{must("Mon-Fri 06:00-22:00"), must("Sat 22:00-02:00")}, Downtime: []Window{must("Wed 12:00-13:00")}}
	at := func(day, hm string) time.Time {
		d, _ := time.Parse("2006-01-02 15:04", day+" "+hm)
		return d
	}
	// 2026-12-07 is a Monday.
	tests := []struct {
		t    time.Time
		poll bool
	}{
		{at("2026-12-07", "05:59"), false},
		{at("2026-12-07", "06:00"), true},
		{at("2026-12-09", "12:30"), false}, // Wednesday downtime
		{at("2026-12-09", "13:00"), true},
		{at("2026-12-12", "23:00"), true},  // Saturday night
		{at("2026-12-13", "01:59"), true},  // into Sunday
		{at("2026-12-13", "02:00"), false}, // Sunday
	}
	for _, tt := range tests {
		if got := ws.MayPoll(tt.t); got != tt.poll {
			t.Errorf("MayPoll(%s %s) = %v", tt.t.Weekday(), tt.t.Format("15:04"), got)
		}
	}
	if n := ws.NextPoll(at("2026-12-13", "03:00")); !n.Equal(at("2026-12-14", "06:00")) {
		t.Errorf("NextPoll = %v", n)
	}
	if !(Windows{}).MayPoll(at("2026-12-13", "03:00")) {
		t.Error("no window must mean always")
	}
	for _, bad := range []string{"", "Mon", "Funday 06:00-07:00", "06:00-06:00", "6-7", "Mon Tue 06:00-07:00"} {
		if _, err := ParseWindow(bad); err == nil {
			t.Errorf("ParseWindow(%q) accepted", bad)
		}
	}
}
