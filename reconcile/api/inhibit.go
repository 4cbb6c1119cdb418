package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/berth-dev/berth/policy/inhibit"
)

// InhibitorList is what GET /inhibitors returns.
type InhibitorList struct {
	// Inhibitors are those that hold now, by app.
	Inhibitors []inhibit.Inhibitor `json:"inhibitors"`
	// Problems are the files of the inhibitor folder that are not
	// inhibitors, or not readable ones.
	Problems []inhibit.Problem `json:"problems,omitempty"`
}

// Released is the answer to POST /inhibit/{app}/release.
type Released struct {
	App      string `json:"app"`
	Released bool   `json:"released"`
}

// inhibitors returns the inhibitor store of the agent: the files in its
// state folder are the inhibitors, whoever writes them.
func (s *Server) inhibitors() *inhibit.Store {
	return inhibit.Open(inhibit.Dir(s.agent.Status().StateDir))
}

func (s *Server) listInhibitors(w http.ResponseWriter, r *http.Request) {
	list, problems, err := s.inhibitors().List(time.Now())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if list == nil {
		list = []inhibit.Inhibitor{}
	}
	writeJSON(w, http.StatusOK, InhibitorList{Inhibitors: list, Problems: problems})
}

// inhibit sets the inhibitor of {app}: ?for=DURATION (required),
// reason=, by=.
func (s *Server) inhibit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d, err := time.ParseDuration(q.Get("for"))
	if err != nil || d <= 0 || d > inhibit.MaxFor {
		writeError(w, http.StatusBadRequest, fmt.Errorf("for=%q: give a duration such as 30m, at most %v", q.Get("for"), inhibit.MaxFor))
		return
	}
	by := q.Get("by")
	if by == "" {
		by = "api"
	}
	now := time.Now()
	in, err := s.inhibitors().Set(inhibit.Inhibitor{App: r.PathValue("app"), Until: now.Add(d), Reason: q.Get("reason"), By: by}, now)
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, inhibit.ErrInvalid) {
			code = http.StatusBadRequest
		}
		writeError(w, code, err)
		return
	}
	s.log.Info("inhibitor set", "app", in.App, "until", in.Until, "reason", in.Reason, "by", in.By)
	writeJSON(w, http.StatusOK, in)
}

func (s *Server) releaseInhibitor(w http.ResponseWriter, r *http.Request) {
	app := r.PathValue("app")
	ok, err := s.inhibitors().Release(app)
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, inhibit.ErrInvalid) {
			code = http.StatusBadRequest
		}
		writeError(w, code, err)
		return
	}
	if ok {
		s.log.Info("inhibitor released", "app", app)
	}
	writeJSON(w, http.StatusOK, Released{App: app, Released: ok})
}

// Inhibitors returns the inhibitors that hold now.
func (c *Client) Inhibitors(ctx context.Context) (*InhibitorList, error) {
	var l InhibitorList
	if err := c.do(ctx, http.MethodGet, "/inhibitors", nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// Inhibit holds the updates of app for d, saying why (reason) and who
// (by; the agent says "api" when empty).
func (c *Client) Inhibit(ctx context.Context, app string, d time.Duration, reason, by string) (inhibit.Inhibitor, error) {
	q := url.Values{"for": {d.String()}}
	if reason != "" {
		q.Set("reason", reason)
	}
	if by != "" {
		q.Set("by", by)
	}
	var in inhibit.Inhibitor
	err := c.do(ctx, http.MethodPost, "/inhibit/"+url.PathEscape(app), q, &in)
	return in, err
}

// Release removes the inhibitor of app and reports whether there was one.
func (c *Client) Release(ctx context.Context, app string) (bool, error) {
	var res Released
	err := c.do(ctx, http.MethodPost, "/inhibit/"+url.PathEscape(app)+"/release", nil, &res)
	return res.Released, err
}
