package margo

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Window is a weekly time range in the device's local time: on Days (all
// days when empty), from Start to End (offsets from midnight; End before
// Start spans midnight into the next day).
type Window struct {
	Days       []time.Weekday
	Start, End time.Duration
}

// Windows are the end user's polling hours and downtime (SEC "Extended
// Device Downtime"): polls happen only inside a polling window (always
// when there is none) and never inside a downtime window, where
// communication errors are not reported either.
type Windows struct {
	Polling  []Window
	Downtime []Window
}

// contains reports whether t falls in w.
func (w Window) contains(t time.Time) bool {
	mid := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, t.Location())
	off := t.Sub(mid)
	day := t.Weekday()
	if w.Start <= w.End {
		return w.onDay(day) && off >= w.Start && off < w.End
	}
	// spans midnight: the evening of day, or the morning after the day before
	return (w.onDay(day) && off >= w.Start) || (w.onDay((day+6)%7) && off < w.End)
}

func (w Window) onDay(d time.Weekday) bool { return len(w.Days) == 0 || slices.Contains(w.Days, d) }

// InDowntime reports whether t is in a downtime window.
func (ws Windows) InDowntime(t time.Time) bool {
	for _, w := range ws.Downtime {
		if w.contains(t) {
			return true
		}
	}
	return false
}

// MayPoll reports whether the device may poll at t.
func (ws Windows) MayPoll(t time.Time) bool {
	if ws.InDowntime(t) {
		return false
	}
	if len(ws.Polling) == 0 {
		return true
	}
	for _, w := range ws.Polling {
		if w.contains(t) {
			return true
		}
	}
	return false
}

// NextPoll returns the first instant at or after t at which the device
// may poll, looking at most 8 days ahead by minutes; the zero time when
// there is none.
func (ws Windows) NextPoll(t time.Time) time.Time {
	if ws.MayPoll(t) {
		return t
	}
	c := t.Truncate(time.Minute).Add(time.Minute)
	for end := t.Add(8 * 24 * time.Hour); c.Before(end); c = c.Add(time.Minute) {
		if ws.MayPoll(c) {
			return c
		}
	}
	return time.Time{}
}

// ParseWindow parses "Mon-Fri 06:00-22:00", "Sat,Sun 00:00-24:00" or
// "22:00-06:00" (every day).
func ParseWindow(s string) (Window, error) {
	var w Window
	fields := strings.Fields(s)
	if len(fields) == 0 || len(fields) > 2 {
		return w, fmt.Errorf("window %q: write [DAYS] HH:MM-HH:MM, such as Mon-Fri 06:00-22:00", s)
	}
	hours := fields[len(fields)-1]
	if len(fields) == 2 {
		days, err := parseDays(fields[0])
		if err != nil {
			return w, fmt.Errorf("window %q: %v", s, err)
		}
		w.Days = days
	}
	from, to, ok := strings.Cut(hours, "-")
	var err1, err2 error
	w.Start, err1 = clock(from)
	w.End, err2 = clock(to)
	if !ok || err1 != nil || err2 != nil || w.Start == w.End {
		return w, fmt.Errorf("window %q: hours must be HH:MM-HH:MM with two different times, such as 06:00-22:00", s)
	}
	return w, nil
}

var dayNames = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

func parseDays(s string) ([]time.Weekday, error) {
	var out []time.Weekday
	for _, part := range strings.Split(strings.ToLower(s), ",") {
		from, to, isRange := strings.Cut(part, "-")
		a, b := slices.Index(dayNames, from), slices.Index(dayNames, to)
		if !isRange {
			b = a
		}
		if a < 0 || b < 0 {
			return nil, fmt.Errorf("days must be names such as Mon, Mon-Fri or Sat,Sun, got %q", part)
		}
		for d := a; ; d = (d + 1) % 7 {
			if !slices.Contains(out, time.Weekday(d)) {
				out = append(out, time.Weekday(d))
			}
			if d == b {
				break
			}
		}
	}
	return out, nil
}

func clock(s string) (time.Duration, error) {
	if s == "24:00" {
		return 24 * time.Hour, nil
	}
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, err
	}
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute, nil
}
