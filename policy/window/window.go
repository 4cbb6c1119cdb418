// Package window says when a device may do something: update windows such
// as "Monday to Friday, 22:00 to 05:00, Europe/Berlin". A window may cross
// midnight; it belongs to the day it starts on, so that window holds from
// Friday 22:00 to Saturday 05:00 but not from Sunday to Monday 05:00.
// Times are wall-clock times in the window's IANA time zone, daylight
// saving time included: on the night clocks go forward, a start or end in
// the hour that does not exist (02:30 in Europe/Berlin) is when the clocks
// jump over it (03:00 summer time), so a window across that night is an
// hour shorter; on the night they go back, a time in the repeated hour is
// its first occurrence, so a window across that night is an hour longer.
//
// A Schedule is a list of windows; nil means always. Contains and Next take
// the time as a parameter: there is no clock here.
package window

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	_ "time/tzdata" // devices without /usr/share/zoneinfo still know their zones
)

// DayNames are the day names a window lists, Sunday first as in
// time.Weekday.
var DayNames = [7]string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// minutesPerDay is 24:00, the latest end.
const minutesPerDay = 24 * 60

// Window is a daily (or weekly) time range.
type Window struct {
	// Days are the days, by time.Weekday, on which the window starts.
	Days [7]bool
	// Start is the start, in minutes after midnight, 0 to 1439.
	Start int
	// End is the end, in minutes after midnight, 0 to 1440 (24:00); an End
	// not after Start is on the next day: the window crosses midnight.
	End int
	// Location is the window's time zone.
	Location *time.Location
}

// Schedule is a set of windows: a time is in the schedule when it is in
// one of them. A nil Schedule is always open.
type Schedule []Window

// ParseDays parses day names (sun, mon, tue, wed, thu, fri, sat); no names
// means every day.
func ParseDays(names []string) ([7]bool, error) {
	var days [7]bool
	if len(names) == 0 {
		for i := range days {
			days[i] = true
		}
		return days, nil
	}
	for _, n := range names {
		i := slices.Index(DayNames[:], strings.ToLower(n))
		if i < 0 {
			return days, fmt.Errorf("unknown day %q: use %s", n, strings.Join(DayNames[:], ", "))
		}
		days[i] = true
	}
	return days, nil
}

// ParseClock parses a wall-clock time "HH:MM" (24-hour) into minutes after
// midnight. "24:00" is accepted when end is true.
func ParseClock(s string, end bool) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, herr := strconv.Atoi(h)
	mm, merr := strconv.Atoi(m)
	switch {
	case !ok || len(h) != 2 || len(m) != 2 || herr != nil || merr != nil || hh < 0 || mm < 0 || mm > 59:
	case hh < 24:
		return hh*60 + mm, nil
	case hh == 24 && mm == 0 && end:
		return minutesPerDay, nil
	}
	if end {
		return 0, fmt.Errorf("%q is not a time of day: write HH:MM, 00:00 to 24:00, such as 05:00", s)
	}
	return 0, fmt.Errorf("%q is not a time of day: write HH:MM, 00:00 to 23:59, such as 22:00", s)
}

// LoadLocation loads an IANA time zone such as Europe/Berlin, or UTC.
// "Local" is refused: a window's zone must not depend on how the device
// happens to be set up.
func LoadLocation(name string) (*time.Location, error) {
	if name == "" || name == "Local" {
		return nil, fmt.Errorf("time zone %q: name an IANA time zone such as Europe/Berlin, or UTC", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q: name an IANA time zone such as Europe/Berlin, or UTC", name)
	}
	return loc, nil
}

// New checks and returns a window.
func New(days [7]bool, start, end int, loc *time.Location) (Window, error) {
	switch {
	case loc == nil:
		return Window{}, errors.New("a window needs a time zone")
	case days == [7]bool{}:
		return Window{}, errors.New("a window needs at least one day")
	case start < 0 || start >= minutesPerDay || end < 0 || end > minutesPerDay:
		return Window{}, fmt.Errorf("start %d or end %d out of range", start, end)
	case start == end:
		return Window{}, fmt.Errorf("start and end are both %s: for a whole day write start: \"00:00\", end: \"24:00\"", clock(start))
	}
	return Window{Days: days, Start: start, End: end, Location: loc}, nil
}

// bounds returns the window that starts on the local date y-m-d (which
// may be out of range, as time.Date allows) as [start, end), and whether
// it starts on that day of the week at all.
func (w Window) bounds(y int, m time.Month, d int) (start, end time.Time, ok bool) {
	day := time.Date(y, m, d, 0, 0, 0, 0, time.UTC) // normalise the date
	if !w.Days[day.Weekday()] {
		return time.Time{}, time.Time{}, false
	}
	start = wall(day, w.Start, w.Location)
	if w.End <= w.Start {
		day = day.AddDate(0, 0, 1)
	}
	return start, wall(day, w.End, w.Location), true
}

// wall returns the instant the clocks of loc show minutes after midnight
// of day (a UTC midnight naming the date). A wall time that occurs twice
// (clocks going back) is its first occurrence; one that does not occur
// (clocks going forward) is the instant the clocks jump over it.
// time.Date leaves both cases unspecified.
func wall(day time.Time, minutes int, loc *time.Location) time.Time {
	target := day.Add(time.Duration(minutes) * time.Minute) // the wall time, read as UTC
	var best time.Time
	seen := map[int]bool{}
	for h := -26; h <= 26; h += 2 { // every offset in effect around that day
		_, off := target.Add(time.Duration(h) * time.Hour).In(loc).Zone()
		if seen[off] {
			continue
		}
		seen[off] = true
		u := target.Add(-time.Duration(off) * time.Second)
		lu := u.In(loc)
		if time.Date(lu.Year(), lu.Month(), lu.Day(), lu.Hour(), lu.Minute(), lu.Second(), 0, time.UTC).Equal(target) &&
			(best.IsZero() || u.Before(best)) {
			best = u
		}
	}
	if !best.IsZero() {
		return best
	}
	// In a gap: the transition, which Go's normalised guess follows.
	g := time.Date(target.Year(), target.Month(), target.Day(), target.Hour(), target.Minute(), 0, 0, loc)
	if s, _ := g.ZoneBounds(); !s.IsZero() && s.Before(g) && g.Sub(s) < 3*time.Hour {
		return s
	}
	return g
}

// Contains reports whether t is inside the window.
func (w Window) Contains(t time.Time) bool {
	lt := t.In(w.Location)
	y, m, d := lt.Date()
	for _, off := range []int{-1, 0} {
		if s, e, ok := w.bounds(y, m, d+off); ok && !t.Before(s) && t.Before(e) {
			return true
		}
	}
	return false
}

// next returns the first start of the window after t (strictly), looking
// up to eight days ahead; zero when there is none.
func (w Window) next(t time.Time) time.Time {
	lt := t.In(w.Location)
	y, m, d := lt.Date()
	for off := 0; off <= 8; off++ {
		if s, _, ok := w.bounds(y, m, d+off); ok && s.After(t) {
			return s
		}
	}
	return time.Time{}
}

// Contains reports whether t is inside the schedule: always for a nil
// schedule.
func (s Schedule) Contains(t time.Time) bool {
	if s == nil {
		return true
	}
	for _, w := range s {
		if w.Contains(t) {
			return true
		}
	}
	return false
}

// Next returns t when t is inside the schedule, else when the schedule
// next opens after t (the zero time if it never does, which a window with
// a day cannot be).
func (s Schedule) Next(t time.Time) time.Time {
	if s.Contains(t) {
		return t
	}
	var best time.Time
	for _, w := range s {
		if n := w.next(t); !n.IsZero() && (best.IsZero() || n.Before(best)) {
			best = n
		}
	}
	return best
}

// String writes the window as in a configuration: "mon,tue 22:00-05:00
// Europe/Berlin".
func (w Window) String() string {
	var days []string
	for i := range 7 { // Monday first
		if d := (i + 1) % 7; w.Days[d] {
			days = append(days, DayNames[d])
		}
	}
	ds := strings.Join(days, ",")
	if len(days) == 7 {
		ds = "daily"
	}
	name := ""
	if w.Location != nil {
		name = w.Location.String()
	}
	return fmt.Sprintf("%s %s-%s %s", ds, clock(w.Start), clock(w.End), name)
}

// String lists the windows; "always" for a nil schedule.
func (s Schedule) String() string {
	if s == nil {
		return "always"
	}
	parts := make([]string, len(s))
	for i, w := range s {
		parts[i] = w.String()
	}
	return strings.Join(parts, "; ")
}

// clock writes minutes after midnight as HH:MM.
func clock(m int) string { return fmt.Sprintf("%02d:%02d", m/60, m%60) }
