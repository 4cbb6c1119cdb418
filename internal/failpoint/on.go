//go:build berth_failpoint

package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

const enabled = true

var armed struct {
	once sync.Once
	name string
	n    int

	mu   sync.Mutex
	hits int
}

func hit(name string) {
	armed.once.Do(func() {
		v := os.Getenv(Env)
		if v == "" {
			return
		}
		n, c, ok := strings.Cut(v, ":")
		count, err := strconv.Atoi(c)
		if !ok || err != nil || count < 1 {
			fmt.Fprintf(os.Stderr, "failpoint: %s=%q: want NAME:N\n", Env, v)
			os.Exit(2)
		}
		armed.name, armed.n = n, count
	})
	if armed.name != name {
		return
	}
	armed.mu.Lock()
	armed.hits++
	kill := armed.hits == armed.n
	armed.mu.Unlock()
	if kill {
		fmt.Fprintf(os.Stderr, "failpoint %s:%d\n", name, armed.n)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL is not delivered synchronously
	}
}
