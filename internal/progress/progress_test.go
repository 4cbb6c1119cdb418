package progress

import (
	"bytes"
	"strings"
	"testing"
)

func TestCounter(t *testing.T) {
	var buf bytes.Buffer
	c := &Counter{out: &buf, label: "packing"}
	c.Update(1<<20, 4<<20)
	c.Update(2<<20, 4<<20) // within 200ms of the first: not drawn
	c.Update(4<<20, 4<<20) // the end is always drawn, and ends the line
	got := buf.String()
	want := "\rpacking 1.0 MiB / 4.0 MiB (25%)\x1b[K\rpacking 4.0 MiB / 4.0 MiB (100%)\x1b[K\n"
	if got != want {
		t.Fatalf("drawn %q, want %q", got, want)
	}
	if strings.Contains(got, "50%") {
		t.Fatal("a redraw within 200ms was not throttled")
	}
}

func TestCounterNotTerminal(t *testing.T) {
	var buf bytes.Buffer
	c := NewCounter(&buf, "packing")
	if c != nil {
		t.Fatal("NewCounter on a buffer returned a counter; want nil (no terminal)")
	}
	c.Update(1, 2) // a nil Counter draws nothing and does not panic
	if buf.Len() != 0 {
		t.Fatalf("drew %q on a non-terminal", buf.String())
	}
}
