package testenv

import (
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Fault is a failure a Proxy injects into what it forwards, for the chaos
// tests: a registry or mirror behind a bad link.
type Fault int

// The faults a Proxy can inject.
const (
	// FaultNone forwards everything as it is.
	FaultNone Fault = iota
	// FaultRefuse closes the listener: connections are refused.
	FaultRefuse
	// Fault500 answers every request 500 Internal Server Error, with a
	// registry error body, without forwarding it.
	Fault500
	// FaultSlow forwards, then sends every body at 1 KB/s.
	FaultSlow
	// FaultReset forwards, sends the headers and half of the body, then
	// resets the connection (TCP RST); a response without a body is reset
	// after its headers.
	FaultReset
	// FaultTruncate forwards, sends the headers (Content-Length kept) and
	// half of the body, then closes the connection cleanly: a body cut
	// short.
	FaultTruncate
	// FaultFlap alternates every FlapPeriod between forwarding and
	// resetting each new connection's request at once.
	FaultFlap
)

// FlapPeriod is the half-period of FaultFlap.
const FlapPeriod = 400 * time.Millisecond

// SlowRate is the body rate of FaultSlow, in bytes per second.
const SlowRate = 1024

// String names the fault.
func (f Fault) String() string {
	switch f {
	case FaultNone:
		return "none"
	case FaultRefuse:
		return "refuse"
	case Fault500:
		return "500"
	case FaultSlow:
		return "1KB/s"
	case FaultReset:
		return "reset"
	case FaultTruncate:
		return "truncate"
	case FaultFlap:
		return "flap"
	}
	return "fault(" + strconv.Itoa(int(f)) + ")"
}

// fault is the Proxy's current fault and when it was set.
type fault struct {
	mode  Fault
	since time.Time
}

// SetFault makes the proxy inject f into the requests that arrive from now
// on (requests in flight keep the fault they started with). FaultRefuse
// stops the listener; any other fault after it starts it again on the same
// port.
func (p *Proxy) SetFault(f Fault) {
	p.t.Helper()
	p.mu.Lock()
	was := p.fault.mode
	p.fault = fault{mode: f, since: time.Now()}
	p.mu.Unlock()
	switch {
	case f == FaultRefuse && was != FaultRefuse:
		p.Stop()
	case f != FaultRefuse && was == FaultRefuse:
		p.Start()
	}
}

// Intercept lets h answer requests instead of the registry: h sees every
// request first (after the fault, if any) and answers it itself when it
// returns true. nil removes it. For hostile registries: endless tag pages,
// huge indexes, slow bodies.
func (p *Proxy) Intercept(h func(w http.ResponseWriter, r *http.Request) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.intercept = h
}

// apply injects the fault into the request: done when it answered (or
// broke) the request itself, else a writer to forward the answer through
// (nil: forward unchanged).
func (f fault) apply(w *statusWriter, r *http.Request) (fw *faultWriter, done bool) {
	switch f.mode {
	case Fault500:
		writeRegistryError(w, http.StatusInternalServerError, "UNKNOWN", "testenv proxy: injected failure")
		return nil, true
	case FaultFlap:
		if (time.Since(f.since)/FlapPeriod)%2 == 1 {
			reset(w)
			return nil, true
		}
		return nil, false
	case FaultSlow, FaultReset, FaultTruncate:
		return &faultWriter{statusWriter: w, mode: f.mode, ctx: r}, false
	}
	return nil, false
}

// faultWriter damages the body of a forwarded answer.
type faultWriter struct {
	*statusWriter
	mode    Fault
	ctx     *http.Request
	cut     int64 // bytes of the body to send before breaking; -1 unknown
	written int64
	broken  bool
	headed  bool
}

var errInjected = errors.New("testenv proxy: injected fault")

func (f *faultWriter) WriteHeader(code int) {
	if f.headed {
		return
	}
	f.headed = true
	f.cut = -1
	if cl, err := strconv.ParseInt(f.Header().Get("Content-Length"), 10, 64); err == nil {
		f.cut = cl / 2
	}
	f.statusWriter.WriteHeader(code)
	if f.ctx.Method == http.MethodHead || f.cut == 0 {
		if f.mode == FaultReset {
			f.flush()
			f.breakConn()
		}
	}
}

func (f *faultWriter) Write(b []byte) (int, error) {
	if !f.headed {
		f.WriteHeader(http.StatusOK)
	}
	if f.broken {
		return 0, errInjected
	}
	switch f.mode {
	case FaultSlow:
		return f.slow(b)
	case FaultReset, FaultTruncate:
		cut := f.cut
		if cut < 0 {
			cut = 256 // no Content-Length: break after a little
		}
		if f.written+int64(len(b)) < cut {
			n, err := f.statusWriter.Write(b)
			f.written += int64(n)
			return n, err
		}
		n, _ := f.statusWriter.Write(b[:cut-f.written])
		f.written += int64(n)
		f.flush()
		f.breakConn()
		return n, errInjected
	}
	return f.statusWriter.Write(b)
}

// slow writes b at SlowRate, stopping when the client goes away.
func (f *faultWriter) slow(b []byte) (int, error) {
	sent := 0
	for sent < len(b) {
		n := min(len(b)-sent, SlowRate/4)
		if _, err := f.statusWriter.Write(b[sent : sent+n]); err != nil {
			return sent, err
		}
		sent += n
		f.flush()
		select {
		case <-f.ctx.Context().Done():
			return sent, f.ctx.Context().Err()
		case <-time.After(time.Second / 4):
		}
	}
	return sent, nil
}

func (f *faultWriter) flush() {
	_ = http.NewResponseController(f.statusWriter).Flush()
}

// breakConn resets or closes the connection under the answer.
func (f *faultWriter) breakConn() {
	f.broken = true
	conn, _, err := http.NewResponseController(f.statusWriter).Hijack()
	if err != nil {
		return
	}
	if f.mode == FaultReset {
		resetConn(conn)
		return
	}
	conn.Close()
}

// finish breaks an answer that ended before its cut (a body shorter than
// expected still ends broken).
func (f *faultWriter) finish() {
	if !f.broken && (f.mode == FaultReset) && f.headed {
		f.flush()
		f.breakConn()
	}
}

// reset breaks the request's connection at once.
func reset(w *statusWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	resetConn(conn)
}

// resetConn closes conn with a TCP RST.
func resetConn(conn net.Conn) {
	raw := conn
	if nc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		raw = nc.NetConn()
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	raw.Close()
}
