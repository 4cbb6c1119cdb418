// Package failpoint names the points where the crash tests kill the agent:
// resolve, verify, download, extract, switch, garbage collection, apply.
//
// In a normal build Hit does nothing and costs nothing (the calls compile
// away). A binary built with the tag berth_failpoint (the crash tests of
// test/e2e build one) reads BERTH_FAILPOINT=NAME:N and, the N-th time the
// point NAME is hit, prints "failpoint NAME:N" to stderr and kills itself
// with SIGKILL: a kill -9 at an exact point of the code, reproducible from
// a seed, which a timer from outside cannot give.
package failpoint

// Env is the environment variable that arms a failpoint: NAME:N.
const Env = "BERTH_FAILPOINT"

// Hit marks the point name. See the package documentation.
func Hit(name string) {
	if enabled {
		hit(name)
	}
}
