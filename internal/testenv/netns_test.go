package testenv

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestNetnsReachesOnlyHostIP checks the isolation the air-gap tests rely
// on: inside the namespace, a server on the veth's host end answers and one
// on the host's 127.0.0.1 does not.
func TestNetnsReachesOnlyHostIP(t *testing.T) {
	if testing.Short() {
		t.Skip("starts network namespaces and servers; run without -short")
	}
	ns := NewNetns(t)
	serve := func(ip string) string {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(l) }()
		t.Cleanup(func() { _ = srv.Close() })
		return "http://" + l.Addr().String() + "/"
	}
	reachable, unreachable := serve(ns.HostIP), serve("127.0.0.1")
	for _, c := range []struct {
		url  string
		want bool
	}{{reachable, true}, {unreachable, false}} {
		out, err := ns.Command("curl", "-sS", "--max-time", "3", c.url).CombinedOutput()
		got := err == nil && strings.TrimSpace(string(out)) == "ok"
		if got != c.want {
			t.Errorf("from namespace %s: GET %s reached=%v, want %v (curl: %v %s)", ns.Name, c.url, got, c.want, err, out)
		}
	}
}
