package testenv

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"testing"
)

// The API server's audit log, which StartKube turns on: tests read it to
// count the write requests of a user.

// auditPolicy records every request at level Metadata, once it completed.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
`

// AuditEvent is one request of the API server's audit log (the fields of
// an audit.k8s.io/v1 Event that tests look at).
type AuditEvent struct {
	AuditID    string `json:"auditID"`
	Stage      string `json:"stage"`
	RequestURI string `json:"requestURI"`
	// Verb is the Kubernetes verb: get, list, watch, create, update,
	// patch, delete, deletecollection.
	Verb string `json:"verb"`
	User struct {
		Username string   `json:"username"`
		Groups   []string `json:"groups"`
	} `json:"user"`
	UserAgent string `json:"userAgent"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
		APIGroup    string `json:"apiGroup"`
		APIVersion  string `json:"apiVersion"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// IsWrite reports whether the event is a write: create, update, patch,
// delete or deletecollection.
func (e AuditEvent) IsWrite() bool {
	switch e.Verb {
	case "create", "update", "patch", "delete", "deletecollection":
		return true
	}
	return false
}

// String describes the event in one line, for failure messages.
func (e AuditEvent) String() string {
	s := fmt.Sprintf("%s %s %s", e.User.Username, e.Verb, e.RequestURI)
	if e.ResponseStatus != nil {
		s += " -> " + strconv.Itoa(e.ResponseStatus.Code)
	}
	return s
}

// AuditMark is a position in the audit log: the requests logged after it
// are those made after Mark was called.
type AuditMark int64

// Mark returns the current end of the audit log. The API server writes an
// event before it finishes the response (blocking mode), so every request
// answered before Mark is before the mark.
func (k *Kube) Mark() AuditMark {
	st, err := os.Stat(k.AuditLog)
	if err != nil {
		return 0
	}
	return AuditMark(st.Size())
}

// Events returns the audit events logged since mark, of user (every user
// when empty).
func (k *Kube) Events(mark AuditMark, user string) ([]AuditEvent, error) {
	f, err := os.Open(k.AuditLog)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(int64(mark), io.SeekStart); err != nil {
		return nil, err
	}
	var out []AuditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e AuditEvent
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("audit log %s: %w", k.AuditLog, err)
		}
		if e.Stage != "ResponseComplete" && e.Stage != "Panic" {
			continue
		}
		if user == "" || e.User.Username == user {
			out = append(out, e)
		}
	}
	return out, sc.Err()
}

// Writes returns the write requests (see AuditEvent.IsWrite) of user (every
// user when empty) logged since mark. It fails the test when the audit log
// cannot be read.
func (k *Kube) Writes(t testing.TB, mark AuditMark, user string) []AuditEvent {
	t.Helper()
	evs, err := k.Events(mark, user)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return slices.DeleteFunc(evs, func(e AuditEvent) bool { return !e.IsWrite() })
}

// CountWrites counts the write requests of user since mark; see Writes.
func (k *Kube) CountWrites(t testing.TB, mark AuditMark, user string) int {
	t.Helper()
	return len(k.Writes(t, mark, user))
}
