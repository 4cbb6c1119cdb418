package reconcile

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/source/margo/margotest"
)

// TestMargoPollingWindows runs the agent's loop (Agent.Run) with the end
// user's polling hours and downtime (SEC "Extended Device Downtime"): in
// downtime, or outside the polling hours, the agent does not reach the
// WFM at all, so no retries and no communication errors (the WFM is down
// throughout: it answers 503 to everything), and its first attempt is the
// "window" outcome, not an error; inside the polling hours it polls (and
// meets the outage).
func TestMargoPollingWindows(t *testing.T) {
	now := time.Now()
	hhmm := func(d time.Duration) string { return now.Add(d).Format("15:04") }
	around := hhmm(-time.Hour) + "-" + hhmm(time.Hour)   // now is inside
	later := hhmm(2*time.Hour) + "-" + hhmm(3*time.Hour) // now is outside
	for _, tt := range []struct {
		name    string
		windows string
		polls   bool
	}{
		{"downtime all day", `{downtime: ["00:00-24:00"]}`, false},
		{"downtime now inside polling hours", fmt.Sprintf(`{polling: [%q], downtime: [%q]}`, around, around), false},
		{"outside the polling hours", fmt.Sprintf(`{polling: [%q]}`, later), false},
		{"inside the polling hours with downtime later", fmt.Sprintf(`{polling: [%q], downtime: [%q]}`, around, later), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newMargoEnv(t)
			e.wfm.Fail(margotest.Fault{Status: 503, RetryAfter: "1"})
			global := fmt.Sprintf(`margo:
  wfm: %s
  deviceId: press-42
  identity: {cert: %s, key: %s, trustBundle: %s}
  interval: 1m
  windows: %s
  verify: {keys: [%s]}
  insecure: true
  device: {vendor: Acme, modelNumber: E-100, serialNumber: SN1, interfaces: [ethernet]}
apply:
  compose: {}
`, e.wfm.URL, e.ids.Cert, e.ids.Key, e.ids.Bundle, tt.windows, e.pub)
			a := newAgent(t, e.config(global), e.ap)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ready := make(chan struct{})
			done := make(chan struct{})
			go func() { a.Run(ctx, func() { close(ready) }); close(done) }()
			select {
			case <-ready:
			case <-ctx.Done():
				t.Fatal("the first attempt never ended")
			}
			cancel()
			<-done
			reqs := e.wfm.Requests()
			if polled := len(reqs) > 0; polled != tt.polls {
				t.Fatalf("the agent sent %d requests to the WFM, want polling: %v", len(reqs), tt.polls)
			}
			for _, s := range a.Status().Sources {
				if s.Name != MargoSource {
					continue
				}
				failed := s.Last != nil && s.Last.Error != ""
				if failed != tt.polls {
					t.Errorf("last attempt %+v: want an error only when the agent polled", s.Last)
				}
				if failed && !strings.Contains(s.Last.Error, "503") {
					t.Errorf("last error %q, want the WFM's 503", s.Last.Error)
				}
			}
			if len(e.ap.log()) != 0 {
				t.Error("something was applied")
			}
		})
	}
}
