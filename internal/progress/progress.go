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
