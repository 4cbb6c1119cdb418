package testenv

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Netns is a network namespace joined to the host's by one veth pair: a
// device whose only route is to HostIP. A process started with Command (or
// Wrap) runs inside it and reaches the host's servers only where they
// listen on HostIP: a registry started with RegistryOptions{IP: n.HostIP}
// is reachable from the namespace, one on 127.0.0.1 is not (the namespace
// has a loopback of its own). Unix sockets are files, so a process inside
// still talks to the host's Docker Engine through its socket.
type Netns struct {
	// Name is the namespace, for `ip netns exec NAME`.
	Name string
	// HostIP is the host end of the veth pair; NSIP the namespace's end.
	HostIP, NSIP string
}

// NewNetns creates a network namespace with a veth pair on a random /30 of
// 10.213.0.0/16, and deletes both when the test ends. It needs root and
// iproute2 (`ip`); without them the test fails saying so.
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("testenv: network namespaces need root: run the tests as root (`sudo make test`)")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatalf("testenv: `ip` not found: run `make test` (installs it as root) or `sudo apt-get install -y iproute2`")
	}
	var b [2]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	n := binary.BigEndian.Uint16(b[:]) % (1 << 14) // 16384 /30 nets in 10.213/16
	third, fourth := n/64, (n%64)*4
	id := randomHex(3)
	ns := &Netns{
		Name:   "berth-test-" + id,
		HostIP: fmt.Sprintf("10.213.%d.%d", third, fourth+1),
		NSIP:   fmt.Sprintf("10.213.%d.%d", third, fourth+2),
	}
	hostIf, nsIf := "bth"+id, "btn"+id
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
			t.Fatalf("testenv: ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", ns.Name)
	t.Cleanup(func() {
		// Deleting the namespace deletes its veth end, and with it the pair.
		_ = exec.Command(ip, "netns", "del", ns.Name).Run()
		_ = exec.Command(ip, "link", "del", hostIf).Run()
	})
	run("link", "add", hostIf, "type", "veth", "peer", "name", nsIf)
	run("link", "set", nsIf, "netns", ns.Name)
	run("addr", "add", ns.HostIP+"/30", "dev", hostIf)
	run("link", "set", hostIf, "up")
	run("netns", "exec", ns.Name, ip, "addr", "add", ns.NSIP+"/30", "dev", nsIf)
	run("netns", "exec", ns.Name, ip, "link", "set", nsIf, "up")
	run("netns", "exec", ns.Name, ip, "link", "set", "lo", "up")
	return ns
}

// Wrap returns the argv that runs bin with args inside the namespace:
// "ip netns exec NAME bin args...". `ip netns exec` execs bin, so the
// process started is bin itself.
func (n *Netns) Wrap(bin string, args ...string) (string, []string) {
	ip, err := exec.LookPath("ip")
	if err != nil {
		ip = "ip"
	}
	return ip, append([]string{"netns", "exec", n.Name, bin}, args...)
}

// Command is exec.Command of bin with args inside the namespace.
func (n *Netns) Command(bin string, args ...string) *exec.Cmd {
	name, argv := n.Wrap(bin, args...)
	return exec.Command(name, argv...)
}
