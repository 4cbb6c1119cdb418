package window

import (
	"strings"
	"testing"
	"time"
)

func mustWindow(t *testing.T, days []string, start, end, tz string) Window {
	t.Helper()
	d, err := ParseDays(days)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseClock(start, false)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ParseClock(end, true)
	if err != nil {
		t.Fatal(err)
	}
	loc, err := LoadLocation(tz)
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(d, s, e, loc)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// TestSchedule checks Contains and Next across midnight and across both
// daylight saving time changes of 2026 (Europe/Berlin: 29 March 02:00 CET
// -> 03:00 CEST, i.e. 01:00Z; 25 October 03:00 CEST -> 02:00 CET, i.e.
// 01:00Z; America/New_York: 8 March and 1 November). Times are written in
// UTC so that the expectations do not go through the code under test.
func TestSchedule(t *testing.T) {
	weeknights := Schedule{mustWindow(t, []string{"mon", "tue", "wed", "thu", "fri"}, "22:00", "05:00", "Europe/Berlin")}
	nightly := Schedule{mustWindow(t, nil, "22:00", "05:00", "Europe/Berlin")}
	gap := Schedule{mustWindow(t, nil, "02:30", "04:00", "Europe/Berlin")}
	twice := Schedule{mustWindow(t, nil, "02:30", "02:45", "Europe/Berlin")}
	nyTwice := Schedule{mustWindow(t, nil, "01:30", "01:40", "America/New_York")}
	saturday := Schedule{mustWindow(t, []string{"sat"}, "00:00", "24:00", "UTC")}
	two := Schedule{
		mustWindow(t, []string{"sun"}, "06:00", "08:00", "UTC"),
		mustWindow(t, []string{"sat"}, "12:00", "13:00", "Asia/Tokyo"),
	}
	for _, tc := range []struct {
		name   string
		s      Schedule
		at     string
		inside bool
		next   string
	}{
		// Winter, weeknights 22:00-05:00 CET = 21:00Z-04:00Z.
		{"friday before", weeknights, "2026-03-27T20:59:59Z", false, "2026-03-27T21:00:00Z"},
		{"friday start", weeknights, "2026-03-27T21:00:00Z", true, ""},
		{"saturday early: friday's window", weeknights, "2026-03-28T03:59:00Z", true, ""},
		// Saturday 05:00 CET; next is Monday 22:00 CEST = 20:00Z, across the change.
		{"saturday end", weeknights, "2026-03-28T04:00:00Z", false, "2026-03-30T20:00:00Z"},
		{"monday early: sunday's window is not a weeknight", weeknights, "2026-03-29T23:30:00Z", false, "2026-03-30T20:00:00Z"},
		{"tuesday early: monday's window, summer time", weeknights, "2026-03-31T02:59:00Z", true, ""},
		{"tuesday 05:00 summer time", weeknights, "2026-03-31T03:00:00Z", false, "2026-03-31T20:00:00Z"},
		// The spring night: 22:00 CET (21:00Z) to 05:00 CEST (03:00Z), 6 hours.
		{"spring night start", nightly, "2026-03-28T21:00:00Z", true, ""},
		{"spring night, across the change", nightly, "2026-03-29T01:30:00Z", true, ""},
		{"spring night last minute", nightly, "2026-03-29T02:59:00Z", true, ""},
		{"spring night end", nightly, "2026-03-29T03:00:00Z", false, "2026-03-29T20:00:00Z"},
		// The autumn night: 22:00 CEST (20:00Z) to 05:00 CET (04:00Z), 8 hours.
		{"autumn night start", nightly, "2026-10-24T20:00:00Z", true, ""},
		{"autumn night, in the repeated hour", nightly, "2026-10-25T01:30:00Z", true, ""},
		{"autumn night last minute", nightly, "2026-10-25T03:59:00Z", true, ""},
		{"autumn night end", nightly, "2026-10-25T04:00:00Z", false, "2026-10-25T21:00:00Z"},
		// 02:30 does not exist on 29 March: the window opens at the jump, 01:00Z.
		{"gap: before the jump", gap, "2026-03-29T00:59:00Z", false, "2026-03-29T01:00:00Z"},
		{"gap: at the jump", gap, "2026-03-29T01:00:00Z", true, ""},
		{"gap: end 04:00 CEST", gap, "2026-03-29T02:00:00Z", false, "2026-03-30T00:30:00Z"},
		{"gap: the day before, CET", gap, "2026-03-28T01:30:00Z", true, ""},
		// 02:30 happens twice on 25 October: the first one (CEST, 00:30Z).
		{"repeated: first 02:40", twice, "2026-10-25T00:40:00Z", true, ""},
		{"repeated: second 02:40", twice, "2026-10-25T01:40:00Z", false, "2026-10-26T01:30:00Z"},
		{"repeated: next from before", twice, "2026-10-25T00:00:00Z", false, "2026-10-25T00:30:00Z"},
		{"new york repeated: first 01:35 EDT", nyTwice, "2026-11-01T05:35:00Z", true, ""},
		{"new york repeated: second 01:35 EST", nyTwice, "2026-11-01T06:35:00Z", false, "2026-11-02T06:30:00Z"},
		{"new york spring", nyTwice, "2026-03-08T06:35:00Z", true, ""},
		// 24:00 ends at midnight.
		{"whole saturday, first second", saturday, "2026-03-28T00:00:00Z", true, ""},
		{"whole saturday, last second", saturday, "2026-03-28T23:59:59Z", true, ""},
		{"whole saturday, sunday", saturday, "2026-03-29T00:00:00Z", false, "2026-04-04T00:00:00Z"},
		// Two windows: the earliest next one wins (Saturday 12:00 JST = 03:00Z).
		{"two windows: saturday tokyo first", two, "2026-03-27T12:00:00Z", false, "2026-03-28T03:00:00Z"},
		{"two windows: then sunday", two, "2026-03-28T04:00:00Z", false, "2026-03-29T06:00:00Z"},
		{"two windows: inside the second", two, "2026-03-29T07:00:00Z", true, ""},
		{"always", nil, "2026-03-29T07:00:00Z", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := utc(tc.at)
			if got := tc.s.Contains(at); got != tc.inside {
				t.Errorf("Contains(%s) = %v, want %v", tc.at, got, tc.inside)
			}
			want := at
			if tc.next != "" {
				want = utc(tc.next)
			}
			if got := tc.s.Next(at); !got.Equal(want) {
				t.Errorf("Next(%s) = %s, want %s", tc.at, got.UTC().Format(time.RFC3339), want.Format(time.RFC3339))
			}
			if n := tc.s.Next(at); !tc.s.Contains(n) {
				t.Errorf("Next(%s) = %s is not inside the schedule", tc.at, n)
			}
		})
	}
	if n := (Schedule{}).Next(utc("2026-03-27T12:00:00Z")); !n.IsZero() {
		t.Errorf("an empty schedule opens at %v", n)
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"day", func() error { _, err := ParseDays([]string{"mon", "monday"}); return err }(), `unknown day "monday"`},
		{"clock 24:00 start", func() error { _, err := ParseClock("24:00", false); return err }(), "00:00 to 23:59"},
		{"clock 24:01 end", func() error { _, err := ParseClock("24:01", true); return err }(), "00:00 to 24:00"},
		{"clock 7:00", func() error { _, err := ParseClock("7:00", false); return err }(), "HH:MM"},
		{"clock 07:60", func() error { _, err := ParseClock("07:60", false); return err }(), "HH:MM"},
		{"clock text", func() error { _, err := ParseClock("noon", false); return err }(), "HH:MM"},
		{"zone", func() error { _, err := LoadLocation("Europe/Nowhere"); return err }(), "unknown time zone"},
		{"local zone", func() error { _, err := LoadLocation("Local"); return err }(), "IANA"},
		{"empty", func() error { _, err := New([7]bool{true}, 60, 60, time.UTC); return err }(), "both 01:00"},
		{"no day", func() error { _, err := New([7]bool{}, 60, 120, time.UTC); return err }(), "at least one day"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, tc.err, tc.want)
		}
	}
	if d, err := ParseDays(nil); err != nil || d != [7]bool{true, true, true, true, true, true, true} {
		t.Errorf("no days = %v, %v; want every day", d, err)
	}
	w := mustWindow(t, []string{"mon", "FRI"}, "22:00", "05:00", "Europe/Berlin")
	if s := w.String(); s != "mon,fri 22:00-05:00 Europe/Berlin" {
		t.Errorf("String = %q", s)
	}
	if s := (Schedule{mustWindow(t, nil, "00:00", "24:00", "UTC")}).String(); s != "daily 00:00-24:00 UTC" {
		t.Errorf("String = %q", s)
	}
	if s := Schedule(nil).String(); s != "always" {
		t.Errorf("String = %q", s)
	}
}
