package bundle

import (
	"io"
	"sync"
)

// meter feeds one progress display from many readers, possibly
// concurrent: the caller's Progress wraps a source that yields as many
// bytes as are asked for, and every byte read through meter.reader is
// read from it once more.
type meter struct {
	mu  sync.Mutex
	pr  io.Reader
	buf []byte
	src *countSource
}

// countSource yields bytes without producing them, until done.
type countSource struct{ end bool }

func (c *countSource) Read(p []byte) (int, error) {
	if c.end {
		return 0, io.EOF
	}
	return len(p), nil
}

func newMeter(wrap func(io.Reader, int64) io.Reader, total int64) *meter {
	if wrap == nil {
		return &meter{}
	}
	src := &countSource{}
	return &meter{pr: wrap(src, total), buf: make([]byte, 32<<10), src: src}
}

// add counts n bytes.
func (m *meter) add(n int64) {
	if m.pr == nil || n <= 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for n > 0 {
		k := int(min(n, int64(len(m.buf))))
		got, _ := m.pr.Read(m.buf[:k])
		if got <= 0 {
			return
		}
		n -= int64(got)
	}
}

// done ends the display.
func (m *meter) done() {
	if m.pr == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.src.end = true
	m.pr.Read(m.buf[:1])
}

// reader counts what is read through r.
func (m *meter) reader(r io.Reader) io.Reader {
	if m.pr == nil {
		return r
	}
	return &meterReader{r: r, m: m}
}

type meterReader struct {
	r io.Reader
	m *meter
}

func (r *meterReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.m.add(int64(n))
	return n, err
}
