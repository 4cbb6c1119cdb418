#!/usr/bin/env bash
# dockerd.sh gives berth's tests and demo a Docker Engine.
#
#   test/scripts/dockerd.sh start  use a running engine, or start dockerd (root)
#   test/scripts/dockerd.sh host   print DOCKER_HOST of the engine to use; exit 1 if none
#   test/scripts/dockerd.sh env    print `export DOCKER_HOST=...` of that engine
#   test/scripts/dockerd.sh stop   stop the dockerd this script started, if any
#
# The engine used is the first that answers GET /_ping with OK:
#   1. $DOCKER_HOST (unix:///path or tcp://host:port), when set;
#   2. unix:///run/berth-test/docker.sock, a dockerd this script started and
#      that still runs: once started, it stays the engine of every run, even
#      if a system Docker appears on /var/run/docker.sock meanwhile (its
#      images and containers are not that engine's);
#   3. unix:///var/run/docker.sock (a system Docker).
# With none, `start` (as root) runs Debian's dockerd in the background:
#   --data-root /var/lib/berth-test/docker   kept between runs: images stay cached
#   --exec-root /run/berth-test/docker       its containerd is started by dockerd
#   -H unix:///run/berth-test/docker.sock, --pidfile /run/berth-test/docker.pid,
#   log /run/berth-test/dockerd.log, and an empty daemon.json of its own (a
#   system /etc/docker/daemon.json does not apply to it).
# It waits up to 60s for _ping, and keeps running after `make test` so the next
# run reuses it; `stop` ends it. All commands are idempotent.
# BERTH_DOCKERD_RUN_DIR and BERTH_DOCKERD_DATA_ROOT override the two roots,
# BERTH_DOCKERD_SYSTEM_HOST the system engine's address (tests).
set -euo pipefail

RUN_DIR=${BERTH_DOCKERD_RUN_DIR:-/run/berth-test}
DATA_ROOT=${BERTH_DOCKERD_DATA_ROOT:-/var/lib/berth-test/docker}
SOCK=$RUN_DIR/docker.sock
PIDFILE=$RUN_DIR/docker.pid
LOG=$RUN_DIR/dockerd.log
MARKER=$RUN_DIR/dockerd.started-by-berth # holds the pid of the dockerd we started
SYSTEM_HOST=${BERTH_DOCKERD_SYSTEM_HOST:-unix:///var/run/docker.sock}
OWN_HOST=unix://$SOCK
START_TIMEOUT=60

export PATH=$PATH:/usr/sbin:/sbin:/usr/bin:/bin

log() { echo "dockerd.sh: $*" >&2; }

# ping HOST succeeds when the Docker Engine at HOST answers /_ping with OK.
ping_engine() {
  local host=$1 out
  case $host in
    unix://*)
      [[ -S ${host#unix://} ]] || return 1
      out=$(curl -sS --max-time 5 --unix-socket "${host#unix://}" http://d/_ping 2>/dev/null) || return 1 ;;
    tcp://*)
      out=$(curl -sS --max-time 5 "http://${host#tcp://}/_ping" 2>/dev/null) || return 1 ;;
    *) return 1 ;;
  esac
  [[ $out == OK ]]
}

# find_engine prints the DOCKER_HOST of the first engine that answers: ours
# before the system's when ours runs.
find_engine() {
  local h own=
  own_pid >/dev/null && own=$OWN_HOST
  for h in "${DOCKER_HOST:-}" "$own" "$SYSTEM_HOST" "$OWN_HOST"; do
    [[ -n $h ]] || continue
    if ping_engine "$h"; then
      echo "$h"
      return 0
    fi
  done
  return 1
}

# own_pid prints the pid of a running dockerd that this script started.
own_pid() {
  local pid
  [[ -f $MARKER ]] || return 1
  pid=$(cat "$MARKER" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  # The same pid could have been reused by another process: check it is ours.
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "-H unix://$SOCK " || return 1
  echo "$pid"
}

no_engine_help() {
  log "no Docker Engine answers on ${DOCKER_HOST:+DOCKER_HOST=$DOCKER_HOST, }$SYSTEM_HOST or $OWN_HOST"
  if [[ -S /var/run/docker.sock && ! -w /var/run/docker.sock ]]; then
    log "(/var/run/docker.sock exists but $(id -un) may not use it: join the docker group, or run as root)"
  fi
}

# alive PID: the process runs (a zombie waiting for its reaper does not).
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [[ $state != Z ]]
}

wait_ping() { # wait_ping PID: until our socket answers, PID exits or the timeout
  local pid=$1 i
  for ((i = 0; i < START_TIMEOUT * 5; i++)); do
    ping_engine "$OWN_HOST" && return 0
    alive "$pid" || return 1
    sleep 0.2
  done
  return 1
}

cmd_start() {
  local host
  if host=$(find_engine); then
    if [[ -n ${DOCKER_HOST:-} && $host != "$DOCKER_HOST" ]]; then
      log "DOCKER_HOST=$DOCKER_HOST does not answer; using $host"
    fi
    log "using the running Docker Engine at $host"
    return 0
  fi
  if [[ $(id -u) -ne 0 ]]; then
    no_engine_help
    log "not root, so not starting one. Either run the tests as root (sudo make test) so this"
    log "script starts dockerd, or start Docker yourself (sudo systemctl start docker, or"
    log "sudo dockerd &) and set DOCKER_HOST to its socket, e.g. export DOCKER_HOST=$SYSTEM_HOST"
    exit 1
  fi
  local dockerd
  dockerd=$(command -v dockerd || true)
  if [[ -z $dockerd ]]; then
    log "dockerd not found: run test/scripts/ensure-deps.sh as root (installs Debian's docker.io),"
    log "or: sudo apt-get install -y docker.io"
    exit 1
  fi

  mkdir -p "$RUN_DIR" "$DATA_ROOT"
  # One start at a time: a second `start` waits here and then finds the engine.
  exec 9>"$RUN_DIR/lock"
  flock -w $((START_TIMEOUT + 10)) 9 || { log "timed out waiting for another dockerd.sh start"; exit 1; }
  if host=$(find_engine); then
    log "using the running Docker Engine at $host"
    return 0
  fi

  local pid
  if pid=$(own_pid); then
    # Ours, but not answering (yet): starting up, or stuck.
    log "dockerd (pid $pid) started earlier does not answer yet; waiting up to ${START_TIMEOUT}s"
    if wait_ping "$pid"; then
      log "using dockerd (pid $pid) at $OWN_HOST"
      return 0
    fi
    log "dockerd (pid $pid) does not answer on $OWN_HOST; stop it with: $0 stop"
    tail -n 40 "$LOG" >&2 || true
    exit 1
  fi
  rm -f "$SOCK" "$PIDFILE" "$MARKER"
  [[ -f $LOG ]] && mv -f "$LOG" "$LOG.1"
  echo '{}' >"$RUN_DIR/daemon.json"

  log "starting $dockerd (data root $DATA_ROOT, log $LOG)"
  setsid "$dockerd" \
    --config-file "$RUN_DIR/daemon.json" \
    --data-root "$DATA_ROOT" \
    --exec-root "$RUN_DIR/docker" \
    -H "$OWN_HOST" \
    --pidfile "$PIDFILE" \
    </dev/null >>"$LOG" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$MARKER"
  if ! wait_ping "$pid"; then
    if alive "$pid"; then
      log "dockerd (pid $pid) did not answer on $OWN_HOST within ${START_TIMEOUT}s; stopping it"
      kill -TERM "$pid" 2>/dev/null || true
    else
      log "dockerd exited before answering on $OWN_HOST"
    fi
    log "last lines of $LOG:"
    tail -n 40 "$LOG" >&2 || true
    exit 1
  fi
  # dockerd wrote its own pid: keep that one (the same unless setsid forked).
  if [[ -s $PIDFILE ]]; then
    pid=$(cat "$PIDFILE")
    echo "$pid" >"$MARKER"
  fi
  log "dockerd (pid $pid) answers at $OWN_HOST; it keeps running (stop: $0 stop)"
}

cmd_host() {
  if ! find_engine; then
    no_engine_help
    log "start one with: sudo $0 start"
    exit 1
  fi
}

cmd_env() {
  local host
  host=$(cmd_host)
  printf 'export DOCKER_HOST=%q\n' "$host"
}

cmd_stop() {
  local pid i
  if ! pid=$(own_pid); then
    log "no dockerd started by this script is running"
    rm -f "$MARKER"
    return 0
  fi
  log "stopping dockerd (pid $pid)"
  kill -TERM "$pid"
  for ((i = 0; i < 150; i++)); do
    alive "$pid" || break
    sleep 0.2
  done
  if alive "$pid"; then
    log "dockerd (pid $pid) still runs after 30s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$MARKER" "$SOCK" "$PIDFILE"
  log "stopped"
}

case "${1:-}" in
  start) cmd_start ;;
  host) cmd_host ;;
  env) cmd_env ;;
  stop) cmd_stop ;;
  -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) echo "usage: $0 start|host|env|stop" >&2; exit 2 ;;
esac
