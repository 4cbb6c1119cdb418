// Package progress shows the progress of long transfers on a terminal.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// Reader counts bytes read through it and, when out is a terminal, redraws
// one status line at most every 200ms.
type Reader struct {
	r     io.Reader
	out   io.Writer
	label string
	total int64

	mu   sync.Mutex
	n    int64
	last time.Time
}

// NewReader wraps r. Progress is drawn only when out is a terminal; total
// may be 0 when unknown.
func NewReader(r io.Reader, out io.Writer, label string, total int64) io.Reader {
	f, ok := out.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return r
	}
	return &Reader{r: r, out: out, label: label, total: total}
}

func (p *Reader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n += int64(n)
	if now := time.Now(); err != nil || now.Sub(p.last) > 200*time.Millisecond {
		p.last = now
		if p.total > 0 {
			fmt.Fprintf(p.out, "\r%s %s / %s (%d%%)\x1b[K", p.label, Size(p.n), Size(p.total), p.n*100/p.total)
		} else {
			fmt.Fprintf(p.out, "\r%s %s\x1b[K", p.label, Size(p.n))
		}
		if err != nil {
			fmt.Fprintln(p.out)
		}
	}
	return n, err
}

// Counter draws the progress of a step that reports counts rather than
// reading through a reader, such as packing a folder. It draws nothing unless
// out is a terminal.
type Counter struct {
	out   io.Writer
	label string

	mu   sync.Mutex
	last time.Time
}

// NewCounter returns a Counter, or nil when out is not a terminal; a nil
// Counter's Update does nothing.
func NewCounter(out io.Writer, label string) *Counter {
	f, ok := out.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return &Counter{out: out, label: label}
}

// Update redraws the line at most every 200ms, and always when done reaches
// total, ending the line then.
func (c *Counter) Update(done, total int64) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	end := done >= total
	now := time.Now()
	if !end && now.Sub(c.last) < 200*time.Millisecond {
		return
	}
	c.last = now
	pct := int64(100)
	if total > 0 {
		pct = done * 100 / total
	}
	fmt.Fprintf(c.out, "\r%s %s / %s (%d%%)\x1b[K", c.label, Size(done), Size(total), pct)
	if end {
		fmt.Fprintln(c.out)
	}
}

// Size formats a byte count for people.
func Size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
