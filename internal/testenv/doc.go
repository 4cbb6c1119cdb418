// Package testenv starts the real servers berth's end-to-end tests run against.
//
// Nothing here is faked: [StartRegistry] runs Debian's docker-registry
// (distribution 2.8) with TLS and htpasswd authentication, [BuildBerth]
// builds the real berth command, [Run] and [StartProcess] run it, and
// [GitRepo] makes a real Git repository with go-git. [StartProxy] puts a
// counting reverse proxy in front of a registry, and [SeedTags] writes
// thousands of tags straight into the registry's storage. The one thing
// the registry cannot do, paginating tags/list (distribution 2.8 ignores n
// and last), the proxy does on request: see [Proxy.PaginateTags].
//
// [Docker] connects to the real Docker Engine on DOCKER_HOST (plain HTTP
// over its socket, no client library) for the Compose tests: list, stop and
// remove containers, volumes and networks by label, pull with credentials.
// [BuildHello] and [PushImage] make the images they run: a static binary in
// an image FROM scratch, since nothing can be pulled from a public registry.
//
// [StartFleet] is the set-up the fleet tests and benchmarks share: a
// registry, a signing key and a fleet repository that [Fleet.Push]
// publishes with a rollout plan, and [Fleet.AgentConfig] for each device.
//
// [StartKube] runs a real kube-apiserver (built and cached by
// test/scripts/kube-apiserver.sh) on Debian's etcd, with token
// authentication, RBAC and an audit log that [Kube.Writes] reads to count
// the write requests of a user. There is no kubelet: pods never run.
//
// The system tools come from test/scripts/ensure-deps.sh, which `make test` runs
// first. A missing tool fails the test with the command that installs it;
// it is never a reason to skip.
package testenv
