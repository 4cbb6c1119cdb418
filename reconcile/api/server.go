package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/reconcile/metrics"
	"github.com/berth-dev/berth/reconcile/store"
)

// MaxHookBody bounds the body of POST /hooks/registry.
const MaxHookBody = 1 << 20

// EventsMediaType is the media type of distribution notification envelopes.
const EventsMediaType = "application/vnd.docker.distribution.events.v1+json"

// shutdownTimeout bounds how long a stopping server waits for requests in
// flight (whose contexts are cancelled) before it closes their connections.
const shutdownTimeout = 5 * time.Second

// Server serves the API for an agent.
type Server struct {
	agent   Agent
	metrics *metrics.Metrics
	log     *slog.Logger

	full     http.Handler // every route: the unix socket
	readOnly http.Handler // no suspend, resume, rollback: TCP
}

// NewServer returns a server for a. m may be nil (GET /metrics answers 404)
// and so may log (nothing is logged).
func NewServer(a Agent, m *metrics.Metrics, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{agent: a, metrics: m, log: log}
	s.full = s.routes(true)
	s.readOnly = s.routes(false)
	return s
}

// Handler returns the handler of every route, including suspend, resume and
// rollback; whoever can reach it controls the agent.
func (s *Server) Handler() http.Handler { return s.full }

// ServeUnix serves every route on a unix socket at path until ctx is done,
// then removes the socket. A stale socket left at path by an agent that
// died is removed first; a live one is an error. The socket is created in
// a private folder, made mode 0600 and renamed into place, so that it is
// never reachable by others whatever the umask.
func (s *Server) ServeUnix(ctx context.Context, path string) error {
	l, fi, err := listenUnix(path)
	if err != nil {
		return err
	}
	defer func() {
		// Remove the socket unless another agent has replaced it since.
		if cur, err := os.Lstat(path); err == nil && os.SameFile(cur, fi) {
			os.Remove(path)
		}
	}()
	s.log.Info("api listening", "socket", path)
	return s.serve(ctx, l, s.full)
}

// ServeTCP serves on addr until ctx is done. TCP has no authentication:
// suspend, resume, rollback and inhibit answer 403 there; health, readiness, status,
// history, metrics, reconcile and the registry hook are served.
func (s *Server) ServeTCP(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	s.log.Info("api listening", "addr", l.Addr().String())
	return s.serve(ctx, l, s.readOnly)
}

func (s *Server) serve(ctx context.Context, l net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// Requests in flight (a synchronous reconcile) end with the server.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("api: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}

// listenUnix listens on a unix socket at path, mode 0600, and returns it
// with the socket's file info.
func listenUnix(path string) (*net.UnixListener, fs.FileInfo, error) {
	if err := removeStaleSocket(path); err != nil {
		return nil, nil, err
	}
	// bind(2) creates the socket with mode 0777 &^ umask: create it in a
	// folder only we can enter, restrict it there, then rename it in place.
	tmpDir, err := os.MkdirTemp(filepath.Dir(path), ".sock-")
	if err != nil {
		return nil, nil, fmt.Errorf("api: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("api: %w", err)
	}
	l.SetUnlinkOnClose(false) // the socket moves; ServeUnix removes it
	var fi fs.FileInfo
	err = os.Chmod(tmp, 0o600)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		fi, err = os.Lstat(path)
	}
	if err != nil {
		l.Close()
		return nil, nil, fmt.Errorf("api: socket %s: %w", path, err)
	}
	return l, fi, nil
}

// removeStaleSocket removes the socket at path unless an agent listens on
// it; anything but a socket is left alone.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("api: %s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("api: another agent is listening on %s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("api: remove stale socket: %w", err)
	}
	return nil
}

func (s *Server) routes(control bool) http.Handler {
	mux := http.NewServeMux()
	handle := func(method, path string, h http.HandlerFunc) {
		mux.HandleFunc(method+" "+path, h)
		allow := method
		if method == http.MethodGet {
			allow = "GET, HEAD"
		}
		// The method-less pattern is less specific: it gets the other methods.
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed; use %s", r.Method, method))
		})
	}
	controlOnly := func(h http.HandlerFunc) http.HandlerFunc {
		if control {
			return h
		}
		return func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusForbidden, errors.New("suspend, resume, rollback and inhibit are served on the unix socket only"))
		}
	}
	handle(http.MethodGet, "/healthz", s.healthz)
	handle(http.MethodGet, "/readyz", s.readyz)
	handle(http.MethodGet, "/status", s.status)
	handle(http.MethodGet, "/history/{source}", s.history)
	handle(http.MethodGet, "/metrics", s.metrics.Handler().ServeHTTP)
	handle(http.MethodPost, "/reconcile", s.reconcile)
	handle(http.MethodPost, "/suspend/{source}", controlOnly(s.suspend(true)))
	handle(http.MethodPost, "/resume/{source}", controlOnly(s.suspend(false)))
	handle(http.MethodPost, "/rollback/{source}", controlOnly(s.rollback))
	handle(http.MethodPost, "/hooks/registry", s.hook)
	handle(http.MethodGet, "/inhibitors", s.listInhibitors)
	handle(http.MethodPost, "/inhibit/{app}", controlOnly(s.inhibit))
	handle(http.MethodPost, "/inhibit/{app}/release", controlOnly(s.releaseInhibitor))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no route %s", r.URL.Path))
	})
	return s.logRequests(mux)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeText(w, http.StatusOK, "ok")
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.agent.Ready(); err != nil {
		writeText(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeText(w, http.StatusOK, "ok")
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st := s.agent.Status()
	if st.Sources == nil {
		st.Sources = []SourceStatus{}
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("source")
	for _, src := range s.agent.Status().Sources {
		if src.Name == name {
			h := src.History
			if h == nil {
				h = []store.Revision{}
			}
			writeJSON(w, http.StatusOK, h)
			return
		}
	}
	s.fail(w, r, fmt.Errorf("%w %q", ErrUnknownSource, name))
}

func (s *Server) reconcile(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var o ReconcileOptions
	if v := q.Get("ignoreWindows"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("ignoreWindows=%q: want true or false", v))
			return
		}
		o.IgnoreWindows = b
	}
	results, err := s.agent.ReconcileNow(r.Context(), q.Get("source"), o)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if results == nil {
		results = []ReconcileResult{}
	}
	writeJSON(w, http.StatusOK, results)
}

// suspended is the answer to POST /suspend and /resume.
type suspended struct {
	Source    string `json:"source"`
	Suspended bool   `json:"suspended"`
}

func (s *Server) suspend(suspend bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("source")
		if err := s.agent.Suspend(name, suspend); err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, suspended{Source: name, Suspended: suspend})
	}
}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request) {
	d := r.URL.Query().Get("digest")
	if d != "" {
		if _, err := digest.Parse(d); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("bad digest %q: %w", d, err))
			return
		}
	}
	res, err := s.agent.Rollback(r.Context(), r.PathValue("source"), d)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// envelope is a distribution notification envelope; only the fields berth
// uses are decoded.
type envelope struct {
	Events []event `json:"events"`
}

type event struct {
	Action string `json:"action"`
	Target struct {
		MediaType  string `json:"mediaType"`
		Digest     string `json:"digest"`
		Repository string `json:"repository"`
		URL        string `json:"url"`
		Tag        string `json:"tag"`
	} `json:"target"`
	Request struct {
		Host string `json:"host"`
	} `json:"request"`
}

// hook handles distribution notifications: each manifest push triggers the
// sources tracking the repository. Pulls, deletes and blob pushes (the
// layers and config uploaded before a manifest) are ignored.
func (s *Server) hook(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != EventsMediaType && mt != "application/json") {
			writeError(w, http.StatusUnsupportedMediaType,
				fmt.Errorf("content type %q: want %s or application/json", ct, EventsMediaType))
			return
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxHookBody))
	var env envelope
	err := dec.Decode(&env)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("data after the envelope")
			if terr != nil {
				err = terr
			}
		}
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("notification larger than %d bytes", tooBig.Limit))
			return
		}
		writeError(w, http.StatusBadRequest, fmt.Errorf("bad notification: %w", err))
		return
	}
	triggered := []string{}
	seen := map[string]bool{}
	for _, ev := range env.Events {
		if ev.Action != "push" || ev.Target.Repository == "" {
			continue
		}
		host := ev.Request.Host
		u, _ := url.Parse(ev.Target.URL)
		if u != nil && strings.Contains(u.Path, "/blobs/") {
			continue
		}
		if host == "" && u != nil {
			host = u.Host
		}
		for _, name := range s.agent.NotifyRepository(r.Context(), host, ev.Target.Repository, ev.Target.Tag, ev.Target.Digest) {
			if !seen[name] {
				seen[name] = true
				triggered = append(triggered, name)
			}
		}
	}
	s.log.Debug("registry notification", "events", len(env.Events), "triggered", triggered)
	writeJSON(w, http.StatusOK, triggered)
}

// fail answers err with the status code its sentinel calls for.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrUnknownSource):
		code = http.StatusNotFound
	case errors.Is(err, ErrConflict):
		code = http.StatusConflict
	}
	writeError(w, code, err)
}

// errorBody is the JSON of every error answer.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, errorBody{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(errorBody{Error: "encode answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

func writeText(w http.ResponseWriter, code int, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	io.WriteString(w, s+"\n")
}

// logRequests logs every request at debug level.
func (s *Server) logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(rec, r)
		s.log.LogAttrs(r.Context(), slog.LevelDebug, "api request",
			slog.String("method", r.Method),
			slog.String("path", r.URL.RequestURI()),
			slog.Int("status", rec.code),
			slog.Duration("duration", time.Since(start)),
			slog.String("remote", r.RemoteAddr))
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.code, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
