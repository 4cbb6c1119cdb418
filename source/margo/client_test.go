package margo

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/source/margo/margotest"
	"github.com/berth-dev/berth/source/margo/outbox"
	"github.com/berth-dev/berth/source/margo/spec"
)

// TestTransportIdentity checks who the client talks to: only a WFM whose
// SVID chains to the bundle and carries exactly the WFM SPIFFE ID, over
// TLS 1.3 unless 1.2 is allowed.
func TestTransportIdentity(t *testing.T) {
	tests := []struct {
		name    string
		wo      margotest.Options
		mutate  func(*Options)
		wantErr string
		is      error
	}{
		{name: "good"},
		{name: "untrusted WFM certificate", wo: margotest.Options{ServerCA: margotest.NewCA(t, "plant.example")}, wantErr: "does not verify against the trust bundle", is: ErrIdentity},
		{name: "wrong WFM SPIFFE ID", wo: margotest.Options{ServerID: "spiffe://plant.example/margo/wfm/line-4"}, wantErr: "presented the SPIFFE ID spiffe://plant.example/margo/wfm/line-4", is: ErrIdentity},
		{name: "WFM presenting a client ID", wo: margotest.Options{ServerID: "spiffe://plant.example/margo/wfm/line-3/client/x"}, wantErr: "only talks to spiffe://plant.example/margo/wfm/line-3", is: ErrIdentity},
		{name: "expired WFM SVID", wo: margotest.Options{ServerSVID: margotest.SVIDOptions{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}}, wantErr: "expired", is: ErrIdentity},
		{name: "WFM SVID with two URI SANs", wo: margotest.Options{ServerSVID: margotest.SVIDOptions{ExtraURI: "spiffe://plant.example/margo/wfm/line-4"}}, wantErr: "more than one URI", is: ErrIdentity},
		{name: "WFM SVID that is a CA", wo: margotest.Options{ServerSVID: margotest.SVIDOptions{CA: true}}, wantErr: "CA flag", is: ErrIdentity},
		{name: "TLS 1.2 server refused", wo: margotest.Options{MaxTLS12: true}, wantErr: "protocol version"},
		{name: "TLS 1.2 when allowed", wo: margotest.Options{MaxTLS12: true}, mutate: func(o *Options) { o.AllowTLS12 = true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.wo, tt.mutate)
			_, err := f.c.Poll(ctx(t), &State{})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				reqs := f.wfm.Requests()
				if len(reqs) == 0 || reqs[0].Client != f.wfm.ID+"/client/press-42" {
					t.Errorf("requests = %+v", reqs)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err is not %v", tt.is)
			}
			if len(f.wfm.Requests()) != 0 {
				t.Errorf("a request reached the WFM: %+v", f.wfm.Requests())
			}
		})
	}
}

// TestClientRefusedByWFM: a client outside the WFM's trust domain does not
// get past the handshake; a retired one gets 403 not-authorized.
func TestClientRefusedByWFM(t *testing.T) {
	f := newFixture(t, margotest.Options{}, nil)
	f.wfm.Retire("press-42")
	_, err := f.c.Poll(ctx(t), &State{})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 403 || ae.Problem == nil || !ae.Problem.Is("not-authorized") || !errors.Is(err, ErrPermanent) {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), "accepted-client policy") {
		t.Errorf("error does not say what to do: %v", err)
	}

	// An SVID of another WFM of the same trust domain.
	other := f.wfm.CA.Mint(t, "spiffe://plant.example/margo/wfm/line-9/client/press-42", margotest.SVIDOptions{})
	files := f.wfm.CA.WriteIdentity(t, filepath.Join(t.TempDir(), "id"), other)
	o := f.c.opts
	o.Identity = Identity{CertFile: files.Cert, KeyFile: files.Key, TrustBundleFile: files.Bundle}
	o.WFMID = ""
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := len(f.wfm.Requests())
	if _, err := c.Poll(ctx(t), &State{}); err == nil || !errors.Is(err, ErrIdentity) {
		// line-9's client requires the WFM line-9: the client refuses line-3.
		t.Fatalf("err = %v", err)
	}
	if len(f.wfm.Requests()) != n {
		t.Error("request sent to the wrong WFM")
	}
}

func TestLoadIdentity(t *testing.T) {
	w := margotest.Start(t, margotest.Options{})
	dir := t.TempDir()
	write := func(name string, s margotest.SVID) Identity {
		f := w.CA.WriteIdentity(t, filepath.Join(dir, name), s)
		return Identity{CertFile: f.Cert, KeyFile: f.Key, TrustBundleFile: f.Bundle}
	}
	good := write("good", w.ClientSVID(t, "press-42", margotest.SVIDOptions{Intermediate: true}))
	info, err := LoadIdentity(good, w.ID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if info.ClientID != w.ID+"/client/press-42" || info.WFMID != w.ID || info.Anchors != 1 {
		t.Errorf("info = %+v", info)
	}
	expired := write("expired", w.ClientSVID(t, "press-42", margotest.SVIDOptions{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}))
	notClient := write("notclient", w.CA.Mint(t, "spiffe://plant.example/workload/x", margotest.SVIDOptions{}))
	twoURIs := write("twouris", w.ClientSVID(t, "press-42", margotest.SVIDOptions{ExtraURI: "spiffe://plant.example/other"}))
	ca := write("ca", w.ClientSVID(t, "press-42", margotest.SVIDOptions{CA: true}))
	foreign := good
	foreign.TrustBundleFile = filepath.Join(dir, "foreign.pem")
	writeFile(t, foreign.TrustBundleFile, margotest.NewCA(t, "plant.example").BundlePEM())
	empty := good
	empty.TrustBundleFile = filepath.Join(dir, "empty.json")
	writeFile(t, empty.TrustBundleFile, []byte(`{"keys": [], "spiffe_sequence": 3}`))
	mismatched := good
	mismatched.KeyFile = expired.KeyFile
	tests := []struct {
		name  string
		id    Identity
		wfmID string
		want  string
	}{
		{"expired", expired, "", "does not verify"},
		{"not a client SVID", notClient, "", "is not a WFM client identity"},
		{"two URI SANs", twoURIs, "", "more than one URI SAN"},
		{"CA leaf", ca, "", "CA flag"},
		{"other CA's bundle", foreign, "", "does not verify against the trust bundle"},
		{"empty SPIFFE bundle", empty, "", "no X.509 trust anchor"},
		{"key of another SVID", mismatched, "", "does not match private key"},
		{"wrong wfmID", good, "spiffe://plant.example/margo/wfm/line-4", "does not match the device's SVID"},
		{"missing file", Identity{CertFile: filepath.Join(dir, "nope.pem"), KeyFile: good.KeyFile, TrustBundleFile: good.TrustBundleFile}, "", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadIdentity(tt.id, tt.wfmID, time.Now())
			if err == nil || !errors.Is(err, ErrIdentity) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrIdentity with %q", err, tt.want)
			}
		})
	}
}

// TestIdentityReload: a renewed SVID written over the files is presented
// from the next request on.
func TestIdentityReload(t *testing.T) {
	f := newFixture(t, margotest.Options{}, nil)
	if _, err := f.c.Poll(ctx(t), &State{}); err != nil {
		t.Fatal(err)
	}
	renewed := f.wfm.ClientSVID(t, "press-42", margotest.SVIDOptions{NotAfter: time.Now().Add(72 * time.Hour)})
	writeFile(t, f.files.Cert, renewed.CertPEM)
	writeFile(t, f.files.Key, renewed.KeyPEM)
	future := time.Now().Add(time.Second)
	os.Chtimes(f.files.Cert, future, future)
	os.Chtimes(f.files.Key, future, future)
	if _, err := f.c.Poll(ctx(t), &State{}); err != nil {
		t.Fatal(err)
	}
	if got := f.c.Identity().NotAfter; !got.Equal(renewed.Leaf.NotAfter) {
		t.Errorf("identity in force expires %v, want the renewed %v", got, renewed.Leaf.NotAfter)
	}
	// A broken rewrite keeps the identity in force.
	writeFile(t, f.files.Key, []byte("garbage"))
	future = future.Add(time.Second)
	os.Chtimes(f.files.Key, future, future)
	if _, err := f.c.Poll(ctx(t), &State{}); err != nil {
		t.Fatalf("poll with a broken key file on disk: %v", err)
	}
}

func TestRetryDecisions(t *testing.T) {
	f := newFixture(t, margotest.Options{}, nil)
	tests := []struct {
		name      string
		fault     margotest.Fault
		retry     bool
		atLeast   time.Duration
		backoff   string
		problemIs string
	}{
		{"503 with Retry-After", margotest.Fault{Status: 503, RetryAfter: "7"}, true, 7 * time.Second, "exponential", ""},
		{"429 with retryAfterSeconds", margotest.Fault{Status: 429, Problem: map[string]any{"type": "about:blank", "status": 429, "retryable": true, "retryAfterSeconds": 12, "backoffStrategy": "none"}}, true, 12 * time.Second, "none", ""},
		{"500 that says not retryable", margotest.Fault{Status: 500, Problem: map[string]any{"status": 500, "retryable": false}}, false, 0, "", ""},
		{"400 invalid-request", margotest.Fault{Status: 400, Problem: map[string]any{"type": spec.ProblemInvalidRequest, "title": "Bad", "status": 400, "retryable": false, "backoffStrategy": "none"}}, false, 0, "none", "invalid-request"},
		{"406", margotest.Fault{Status: 406}, false, 0, "none", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fault.Path, tt.fault.Count = "/api/v1/deployments", 1
			f.wfm.Fail(tt.fault)
			_, err := f.c.Poll(ctx(t), &State{})
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v", err)
			}
			if ae.Retryable != tt.retry || errors.Is(err, ErrRetryable) != tt.retry || errors.Is(err, ErrPermanent) == tt.retry || ae.Backoff != tt.backoff {
				t.Errorf("APIError = %+v", ae)
			}
			if tt.problemIs != "" && (ae.Problem == nil || !ae.Problem.Is(tt.problemIs)) {
				t.Errorf("problem = %+v", ae.Problem)
			}
			b := Backoff{Base: time.Second}
			d, retry := b.Next(err)
			if retry != tt.retry || (retry && d < tt.atLeast) {
				t.Errorf("Backoff.Next = %v, %v; want retry %v after at least %v", d, retry, tt.retry, tt.atLeast)
			}
		})
	}
	// Exponential backoff grows; "none" does not; a transport failure is retried.
	b := Backoff{Base: time.Second, Max: time.Minute}
	e := &APIError{Status: 503, Retryable: true, Backoff: spec.BackoffExponential}
	d1, _ := b.Next(e)
	d2, _ := b.Next(e)
	d3, _ := b.Next(e)
	if d1 != time.Second || d2 != 2*time.Second || d3 != 4*time.Second {
		t.Errorf("exponential: %v %v %v", d1, d2, d3)
	}
	b.Reset()
	n1, _ := b.Next(&APIError{Retryable: true, Backoff: spec.BackoffNone, RetryAfter: 3 * time.Second})
	n2, _ := b.Next(&APIError{Retryable: true, Backoff: spec.BackoffNone, RetryAfter: 3 * time.Second})
	if n1 != 3*time.Second || n2 != 3*time.Second {
		t.Errorf("none: %v %v", n1, n2)
	}
	if d, ok := (&Backoff{}).Next(errors.New("connection refused")); !ok || d <= 0 {
		t.Errorf("transport failure: %v %v", d, ok)
	}
}

func status(id string, state string) spec.DeploymentStatus {
	cs := []spec.ComponentStatus{{Name: "web", State: state}}
	if state == spec.StateFailed {
		cs[0].Error = &spec.StatusError{Code: "APPLY", Source: "web", Message: "container exited 1"}
	}
	return spec.NewStatus(id, "press-42", "app", 3, cs)
}

// TestReporterOutage: status posts made while the WFM is down are queued
// on disk, survive a restart, and arrive in order afterwards.
func TestReporterOutage(t *testing.T) {
	f := newFixture(t, margotest.Options{}, nil)
	qdir := filepath.Join(f.dir, "outbox")
	q, err := outbox.Open(qdir, 100)
	if err != nil {
		t.Fatal(err)
	}
	r := NewReporter(f.c, q)
	f.wfm.Fail(margotest.Fault{Path: "/api/v1/deployments/", Method: http.MethodPost, Status: 503, RetryAfter: "1"})
	for _, s := range []string{spec.StateInstalling, spec.StateInstalled} {
		if err := r.Report(ctx(t), status(depID(1), s)); err == nil || !errors.Is(err, ErrRetryable) {
			t.Fatalf("report during outage: %v", err)
		}
	}
	if err := r.Report(ctx(t), status(depID(2), spec.StateFailed)); err == nil {
		t.Fatal("report during outage succeeded")
	}
	if r.Pending() != 3 || len(f.wfm.Statuses()) != 0 {
		t.Fatalf("pending %d, delivered %d", r.Pending(), len(f.wfm.Statuses()))
	}
	// Restart: a new reporter over the same folder.
	f.wfm.ClearFaults()
	q2, err := outbox.Open(qdir, 100)
	if err != nil {
		t.Fatal(err)
	}
	r2 := NewReporter(f.c, q2)
	if err := r2.Flush(ctx(t)); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range f.wfm.Statuses() {
		got = append(got, s.DeploymentID[:8]+"="+s.State)
	}
	want := []string{"00000001=installing", "00000001=installed", "00000002=failed"}
	if !reflect.DeepEqual(got, want) || r2.Pending() != 0 {
		t.Errorf("delivered %v (pending %d), want %v", got, r2.Pending(), want)
	}
	if st := f.wfm.Statuses()[2]; st.Error["code"] != "APPLY" || st.Components[0].Error["message"] != "container exited 1" || st.AdoptedManifestVersion != 3 {
		t.Errorf("failed status = %+v", st)
	}
	if v := f.wfm.Violations(); len(v) != 0 {
		t.Errorf("schema violations: %v", v)
	}
	// A post the WFM refuses for good is dropped, and the queue moves on.
	f.wfm.Fail(margotest.Fault{Path: "/api/v1/deployments/" + depID(3), Method: http.MethodPost, Status: 422, Count: 1})
	r2.Report(ctx(t), status(depID(3), spec.StateInstalled))
	if err := r2.Report(ctx(t), status(depID(4), spec.StateInstalled)); err != nil || r2.Pending() != 0 {
		t.Errorf("after a refused post: %v, pending %d", err, r2.Pending())
	}
	if n := len(f.wfm.Statuses()); n != 4 {
		t.Errorf("%d statuses delivered, want 4", n)
	}
}

func TestCapabilities(t *testing.T) {
	f := newFixture(t, margotest.Options{}, nil)
	caps, err := Discover(DeviceInfo{ID: "press-42", Vendor: "Acme", ModelNumber: "E-100", SerialNumber: "SN1",
		Labels: map[string]string{"line": "7"}, DeploymentTypes: []string{"compose"}, StoragePath: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	p := caps.Properties
	if p.CPUs[0].Cores < 1 || p.Memory == "" || p.Storage == "" || p.SupportedRuntimes[0] != "oci" || p.Interfaces == nil {
		t.Fatalf("discovered %+v", p)
	}
	st := &State{}
	sent, err := f.c.SyncCapabilities(ctx(t), st, caps, true)
	if err != nil || !sent {
		t.Fatalf("first: %v %v", sent, err)
	}
	if sent, err := f.c.SyncCapabilities(ctx(t), st, caps, false); sent || err != nil {
		t.Errorf("unchanged capabilities sent again: %v %v", sent, err)
	}
	caps.Labels["line"] = "8"
	if sent, err := f.c.SyncCapabilities(ctx(t), st, caps, false); !sent || err != nil {
		t.Errorf("changed capabilities not sent: %v %v", sent, err)
	}
	got, ok := f.wfm.Capabilities("press-42")
	if !ok || got["labels"].(map[string]any)["line"] != "8" {
		t.Errorf("WFM has %v", got)
	}
	var codes []int
	for _, r := range f.wfm.Requests() {
		codes = append(codes, r.Status)
	}
	if !reflect.DeepEqual(codes, []int{201, 200}) {
		t.Errorf("answers %v, want 201 then 200", codes)
	}
	if v := f.wfm.Violations(); len(v) != 0 {
		t.Errorf("schema violations: %v", v)
	}
}

// TestDoubleValidates makes sure the double catches bad bodies, so that
// its silence in the other tests means something.
func TestDoubleValidates(t *testing.T) {
	bad := []struct{ body, want string }{
		{`{"properties": {"id": "press-42", "vendor": "A", "modelNumber": "M", "serialNumber": "S", "cpu": [{"cores": 2}], "memory": "8 Gi", "storage": "1Gi", "peripherals": [], "interfaces": [], "otelCollector": true, "supportedRuntimes": ["oci"], "supportedDeploymentTypes": ["compose"]}}`, `additional property "cpu"`},
		{`{"properties": {"id": "press-42", "vendor": "A", "modelNumber": "M", "serialNumber": "S", "cpus": [{"cores": 2, "architecture": "x86"}], "memory": "8Gi", "storage": "1Gi", "peripherals": [], "interfaces": [{"type": "lan"}], "otelCollector": "yes", "supportedRuntimes": [], "supportedDeploymentTypes": ["compose"]}}`, `"x86" is not one of`},
	}
	for _, b := range bad {
		errs := margotest.ValidateCapabilities([]byte(b.body), "press-42")
		if !strings.Contains(strings.Join(errs, "\n"), b.want) {
			t.Errorf("ValidateCapabilities(%s) = %v, want %q", b.body, errs, b.want)
		}
	}
	if errs := margotest.ValidateStatus([]byte(`{"deploymentId": "`+depID(1)+`", "adoptedManifestVersion": 0, "status": {"state": "installed"}, "components": [{"name": "a", "state": "failed", "error": {"code": "", "source": "a"}}]}`), depID(1)); len(errs) < 3 {
		t.Errorf("ValidateStatus found only %v", errs)
	}
}
