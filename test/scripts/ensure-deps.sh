#!/usr/bin/env bash
# ensure-deps.sh installs the system tools berth's tests and demo run against.
#
# It is idempotent: every tool that is already there is left alone, and
# apt-get runs (update once, then one install) only when something is
# missing. As root it installs Debian packages; as any other user it exits 1
# and prints the exact command to run.
#
#   test/scripts/ensure-deps.sh          install what is missing (root) or explain
#   test/scripts/ensure-deps.sh --check  only report; exit 1 if something is missing
#   test/scripts/ensure-deps.sh --list   print the Debian packages it manages
#
# Services: Debian's docker-registry package ships a service that listens on
# :5000. The install below forbids maintainer scripts from starting any
# service (policy-rc.d), and the tests never use port 5000: they start their
# own `docker-registry serve` on a free loopback port (internal/testenv).
# Debian's docker.io (dockerd, with containerd and runc) is installed the
# same way, its service not started: test/scripts/dockerd.sh starts a
# dockerd of its own for `make test` and `make demo` when none runs.
set -euo pipefail

# DEPS is the one list of what the project needs from the system, one entry a
# line: "<debian package> <what proves it is installed>". The proof is a
# command looked up on PATH, or an absolute path that must exist.
# Later work adds lines here (docker.io, etcd-server, ...).
DEPS=(
  "docker-registry /usr/bin/docker-registry" # distribution 2.8: e2e registry
  "openssl openssl"
  "curl curl"
  "ca-certificates /etc/ssl/certs/ca-certificates.crt"
  "git git"
  "make make"
  "apache2-utils htpasswd" # the demo's registry password file
  # The Docker Engine the Compose applier's tests and the demo run against.
  # Proof is dockerd: a docker CLI alone (say in /usr/local/bin) is no engine.
  "docker.io /usr/sbin/dockerd" # brings containerd, runc, tini (docker-init)
  "iptables /usr/sbin/iptables" # dockerd's bridge networking and port mapping
  "iproute2 /usr/sbin/ip" # network namespaces of the air-gap tests
  "etcd-server /usr/bin/etcd" # the store of the Helm tests' kube-apiserver
  # The remote-write receiver of the fleet-status tests (2.42 in bookworm):
  # started by internal/testenv on loopback, never as the Debian service.
  "prometheus /usr/bin/prometheus"
  # make dist's arm64 and armv7 binaries run under qemu in test/e2e.
  "qemu-user-static /usr/bin/qemu-aarch64-static"
)

mode=install
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  --list) mode=list ;;
  -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "ensure-deps: unknown argument: $1 (use --check, --list or no argument)" >&2; exit 2 ;;
esac

present() {
  local proof=$1
  if [[ $proof == /* ]]; then
    [[ -e $proof ]]
  else
    command -v "$proof" >/dev/null 2>&1
  fi
}

missing=()
for dep in "${DEPS[@]}"; do
  read -r pkg proof <<<"$dep"
  if [[ $mode == list ]]; then
    echo "$pkg"
    continue
  fi
  if ! present "$proof"; then
    missing+=("$pkg")
  fi
done
[[ $mode == list ]] && exit 0

if ((${#missing[@]} == 0)); then
  exit 0
fi

if [[ $mode == check ]]; then
  echo "ensure-deps: missing Debian packages: ${missing[*]}" >&2
  echo "ensure-deps: install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "ensure-deps: missing Debian packages: ${missing[*]}" >&2
  echo "ensure-deps: not root, so not installing them; run:" >&2
  echo "    sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-deps: missing Debian packages: ${missing[*]}, and apt-get is not available here;" >&2
  echo "ensure-deps: install the equivalent packages with this system's package manager" >&2
  exit 1
fi

echo "ensure-deps: installing ${missing[*]}" >&2

# Keep maintainer scripts from starting services (docker-registry's on :5000)
# while we install. Only when no policy is in place already; removed on exit.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\n# written by berth test/scripts/ensure-deps.sh for the length of one install\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"

still=()
for dep in "${DEPS[@]}"; do
  read -r pkg proof <<<"$dep"
  present "$proof" || still+=("$pkg")
done
if ((${#still[@]} > 0)); then
  echo "ensure-deps: still missing after apt-get install: ${still[*]}" >&2
  exit 1
fi
echo "ensure-deps: installed ${missing[*]}" >&2
