package memtrim

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

func rssFileKiB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "RssFile:"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// TestTrimReleasesProgramPages checks that the program's file-backed pages
// go down after Trim, and that the program keeps running correctly (its
// code faults back in).
func TestTrimReleasesProgramPages(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Fatalf("memtrim's page-out is Linux-only; this suite runs on Linux")
	}
	before := rssFileKiB(t)
	Trim()
	after := rssFileKiB(t)
	if after >= before {
		t.Fatalf("RssFile %d KiB before Trim, %d KiB after: nothing was paged out", before, after)
	}
	// Code still runs after its pages were dropped.
	if got := strings.Repeat("ab", 3); got != "ababab" {
		t.Fatal(got)
	}
}
