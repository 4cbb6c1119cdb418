#!/usr/bin/env bash
# kube.sh gives berth's Helm demo a Kubernetes API server on loopback:
# Debian's etcd and a kube-apiserver built by test/scripts/kube-apiserver.sh.
#
#   test/scripts/kube.sh start       start etcd and kube-apiserver, or use the
#                                    ones running; print the kubeconfig's path
#   test/scripts/kube.sh kubeconfig  print the kubeconfig's path; exit 1 if the
#                                    API server does not answer
#   test/scripts/kube.sh env         print `export KUBECONFIG=...`
#   test/scripts/kube.sh stop        stop the API server and etcd this script started
#   test/scripts/kube.sh reset       stop them and remove their state folder
#
# Everything lives in one folder, BERTH_KUBE_DIR (default, as root:
# /var/lib/berth-test/kube; as another user: $TMPDIR/berth-test-kube-$UID):
# etcd's data, a CA and the API server's serving certificate (127.0.0.1,
# localhost, kubernetes.default.svc), the service-account signing key, a
# token file with one admin token (group system:masters), an audit policy
# and log (audit.log: every request but the API server's own, at Metadata
# level), the logs of both servers (etcd.log, kube-apiserver.log), their
# pids and the kubeconfig.
# Both listen on loopback only, on free ports chosen at the first start and
# kept while free. Authorization is RBAC; anonymous requests reach only
# /healthz, /livez, /readyz and /version. There is no kubelet and no
# controller manager: Pods never run, Deployments never become ready.
#
# start waits up to 90s for /readyz; the first run builds kube-apiserver
# (about 6 minutes, then cached). The servers keep running after the script
# ends; stop ends them. All commands are idempotent and need no root.
# KUBE_APISERVER names a kube-apiserver binary to use instead of building one.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [[ -n ${BERTH_KUBE_DIR:-} ]]; then
  DIR=$BERTH_KUBE_DIR
elif [[ $(id -u) -eq 0 ]]; then
  DIR=/var/lib/berth-test/kube
else
  DIR=${TMPDIR:-/tmp}/berth-test-kube-$(id -u)
fi
KUBECONFIG_FILE=$DIR/kubeconfig
START_TIMEOUT=90
SERVICE_CIDR=10.0.0.0/24
SERVICE_IP=10.0.0.1 # the first address of SERVICE_CIDR: service "kubernetes"

export PATH=$PATH:/usr/sbin:/sbin:/usr/bin:/bin

log() { echo "kube.sh: $*" >&2; }

# alive PID: the process runs (a zombie waiting for its reaper does not).
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [[ $state != Z ]]
}

# own_pid NAME MARK prints the pid recorded in DIR/NAME.pid when that
# process runs and its command line holds MARK (the pid was not reused).
own_pid() {
  local name=$1 mark=$2 pid
  pid=$(cat "$DIR/$name.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$mark" || return 1
  echo "$pid"
}
etcd_pid() { own_pid etcd "--data-dir $DIR/etcd "; }
api_pid() { own_pid kube-apiserver "--token-auth-file $DIR/tokens.csv "; }

port_free() { ! (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port prints a free loopback port that is not one of its arguments.
free_port() {
  local p i taken
  for ((i = 0; i < 100; i++)); do
    p=$((20000 + RANDOM % 30000))
    taken=
    for q in "$@"; do [[ $p == "$q" ]] && taken=1; done
    [[ -z $taken ]] && port_free "$p" && { echo "$p"; return 0; }
  done
  log "no free loopback port found"
  exit 1
}

# token prints the admin token.
token() { cut -d, -f1 "$DIR/tokens.csv"; }

# ready succeeds when the API server answers /readyz with ok to the admin.
ready() {
  [[ -f $DIR/ports && -f $DIR/tokens.csv ]] || return 1
  local out
  # shellcheck disable=SC1091
  source "$DIR/ports"
  out=$(curl -sS --max-time 5 --cacert "$DIR/ca.pem" -H "Authorization: Bearer $(token)" \
    "https://127.0.0.1:$API_PORT/readyz" 2>/dev/null) || return 1
  [[ $out == ok ]]
}

etcd_healthy() {
  [[ -f $DIR/ports ]] || return 1
  # shellcheck disable=SC1091
  source "$DIR/ports"
  curl -sS --max-time 5 "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"'
}

# secrets writes what the servers need once: certificates, keys, the token
# file and the audit policy.
secrets() {
  local tmp
  if [[ ! -s $DIR/ca.pem || ! -s $DIR/server.pem || ! -s $DIR/server.key ]]; then
    command -v openssl >/dev/null || { log "openssl missing: run test/scripts/ensure-deps.sh as root"; exit 1; }
    tmp=$(mktemp -d "$DIR/certs.XXXXXX")
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj /CN=berth-test-kube-ca -keyout "$tmp/ca.key" -out "$tmp/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj /CN=kube-apiserver -keyout "$tmp/server.key" -out "$tmp/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,IP:%s,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' \
      "$SERVICE_IP" >"$tmp/san.ext"
    openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial \
      -days 3650 -extfile "$tmp/san.ext" -out "$tmp/server.pem" 2>/dev/null
    mv "$tmp/ca.key" "$tmp/server.key" "$DIR/"
    mv "$tmp/server.pem" "$DIR/server.pem"
    mv "$tmp/ca.pem" "$DIR/ca.pem"
    rm -rf "$tmp"
  fi
  if [[ ! -s $DIR/sa.key || ! -s $DIR/sa.pub ]]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$DIR/sa.key" 2>/dev/null
    openssl pkey -in "$DIR/sa.key" -pubout -out "$DIR/sa.pub" 2>/dev/null
  fi
  if [[ ! -s $DIR/tokens.csv ]]; then
    (umask 077 && printf '%s,berth-admin,berth-admin,"system:masters"\n' "$(openssl rand -hex 24)" >"$DIR/tokens.csv")
  fi
  cat >"$DIR/audit-policy.yaml" <<'YAML'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None                # the API server's own loopback client
    users: [system:apiserver]
  - level: Metadata
YAML
}

# choose_ports keeps the ports of DIR/ports while they are free, else picks
# new ones, and writes them back.
choose_ports() {
  local etcd=0 peer=0 api=0
  if [[ -f $DIR/ports ]]; then
    # shellcheck disable=SC1091
    source "$DIR/ports"
    etcd=${ETCD_PORT:-0} peer=${ETCD_PEER_PORT:-0} api=${API_PORT:-0}
  fi
  if ! etcd_pid >/dev/null; then
    { [[ $etcd != 0 ]] && port_free "$etcd"; } || etcd=$(free_port "$peer" "$api")
    { [[ $peer != 0 ]] && port_free "$peer"; } || peer=$(free_port "$etcd" "$api")
  fi
  { [[ $api != 0 ]] && port_free "$api"; } || api=$(free_port "$etcd" "$peer")
  printf 'ETCD_PORT=%s\nETCD_PEER_PORT=%s\nAPI_PORT=%s\n' "$etcd" "$peer" "$api" >"$DIR/ports"
  ETCD_PORT=$etcd ETCD_PEER_PORT=$peer API_PORT=$api
}

write_kubeconfig() {
  local tmp=$KUBECONFIG_FILE.tmp
  (umask 077 && cat >"$tmp" <<YAML)
apiVersion: v1
kind: Config
clusters:
  - name: berth-test
    cluster:
      server: https://127.0.0.1:$API_PORT
      certificate-authority: $DIR/ca.pem
users:
  - name: berth-admin
    user:
      token: $(token)
contexts:
  - name: berth-test
    context: {cluster: berth-test, user: berth-admin}
current-context: berth-test
YAML
  mv "$tmp" "$KUBECONFIG_FILE"
}

# wait_for PID CHECK: 0 once CHECK succeeds, 2 when PID exits first, 1
# after the timeout.
wait_for() {
  local pid=$1 check=$2 i
  for ((i = 0; i < START_TIMEOUT * 5; i++)); do
    "$check" && return 0
    alive "$pid" || return 2
    sleep 0.2
  done
  return 1
}

# started NAME PID CHECK waits for a server just started. It returns 0 when
# it is ready, and 2 when it exited because one of its ports was taken
# since choose_ports found it free (the caller tries other ports); it exits
# the script on any other failure.
started() {
  local name=$1 pid=$2 check=$3 rc=0
  wait_for "$pid" "$check" || rc=$?
  case $rc in
    0) return 0 ;;
    2)
      if tail -n 20 "$DIR/$name.log" | grep -q 'address already in use'; then
        log "$name: a port was taken since it was found free; trying other ports"
        rm -f "$DIR/$name.pid"
        return 2
      fi
      log "$name exited before it was ready" ;;
    *)
      log "$name did not become ready within ${START_TIMEOUT}s; stopping it"
      kill -TERM "$pid" 2>/dev/null || true ;;
  esac
  log "last lines of $DIR/$name.log:"
  tail -n 30 "$DIR/$name.log" >&2 || true
  exit 1
}

# start_etcd starts etcd on ETCD_PORT and ETCD_PEER_PORT; see started.
start_etcd() {
  local etcd pid
  etcd=$(command -v etcd || true)
  if [[ -z $etcd ]]; then
    log "etcd not found: run test/scripts/ensure-deps.sh as root (installs Debian's etcd-server),"
    log "or: sudo apt-get install -y etcd-server"
    exit 1
  fi
  if [[ -f $DIR/etcd.log ]]; then mv -f "$DIR/etcd.log" "$DIR/etcd.log.1"; fi
  log "starting $etcd on 127.0.0.1:$ETCD_PORT (data $DIR/etcd, log $DIR/etcd.log)"
  # The trailing space of "--data-dir DIR " is what etcd_pid looks for.
  setsid "$etcd" --name berth-test --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "berth-test=http://127.0.0.1:$ETCD_PEER_PORT" \
    </dev/null >>"$DIR/etcd.log" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$DIR/etcd.pid"
  started etcd "$pid" etcd_healthy
}

# start_apiserver starts kube-apiserver BIN on API_PORT; see started.
start_apiserver() {
  local bin=$1 pid
  if [[ -f $DIR/kube-apiserver.log ]]; then mv -f "$DIR/kube-apiserver.log" "$DIR/kube-apiserver.log.1"; fi
  log "starting $bin on https://127.0.0.1:$API_PORT (log $DIR/kube-apiserver.log)"
  # --token-auth-file must stay directly followed by a space: api_pid looks
  # for it. The endpoint reconciler is off: 127.0.0.1 is no valid endpoint.
  setsid "$bin" \
    --token-auth-file "$DIR/tokens.csv" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
    --tls-cert-file "$DIR/server.pem" --tls-private-key-file "$DIR/server.key" \
    --client-ca-file "$DIR/ca.pem" --cert-dir "$DIR/certs" \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$DIR/sa.pub" --service-account-signing-key-file "$DIR/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --endpoint-reconciler-type none \
    --audit-policy-file "$DIR/audit-policy.yaml" --audit-log-path "$DIR/audit.log" \
    --audit-log-maxsize 100 --audit-log-maxbackup 1 \
    --profiling=false \
    </dev/null >>"$DIR/kube-apiserver.log" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$DIR/kube-apiserver.pid"
  started kube-apiserver "$pid" ready
}

cmd_start() {
  mkdir -p "$DIR"
  chmod 0700 "$DIR"
  touch "$DIR/.berth-kube" # reset removes only folders that have it
  # One start at a time: a second `start` waits here and then finds them.
  exec 9>"$DIR/lock"
  flock -w $((START_TIMEOUT * 2 + 400)) 9 || { log "timed out waiting for another kube.sh start"; exit 1; }
  if api_pid >/dev/null && ready; then
    log "using the running kube-apiserver at https://127.0.0.1:$API_PORT"
    write_kubeconfig
    echo "$KUBECONFIG_FILE"
    return 0
  fi
  local pid bin rc attempt
  if pid=$(api_pid); then
    log "kube-apiserver (pid $pid) started earlier is not ready yet; waiting up to ${START_TIMEOUT}s"
    wait_for "$pid" ready || { log "kube-apiserver (pid $pid) is not ready; see $DIR/kube-apiserver.log, or: $0 stop"; exit 1; }
    write_kubeconfig
    echo "$KUBECONFIG_FILE"
    return 0
  fi
  if [[ -n ${KUBE_APISERVER:-} ]]; then
    bin=$KUBE_APISERVER
  else
    bin=$(bash "$ROOT/test/scripts/kube-apiserver.sh") || { log "could not build kube-apiserver"; exit 1; }
  fi
  [[ -x $bin ]] || { log "$bin is not an executable kube-apiserver"; exit 1; }
  secrets
  for attempt in 1 2 3 4 5; do
    choose_ports
    rc=0
    if pid=$(etcd_pid); then
      wait_for "$pid" etcd_healthy || { log "etcd (pid $pid) is not healthy; see $DIR/etcd.log, or: $0 stop"; exit 1; }
    else
      start_etcd || rc=$?
    fi
    if ((rc == 0)); then
      start_apiserver "$bin" || rc=$?
    fi
    ((rc == 0)) && break
    ((attempt < 5)) || { log "no free ports after $attempt attempts"; exit 1; }
  done
  write_kubeconfig
  log "kube-apiserver (pid $(api_pid)) is ready at https://127.0.0.1:$API_PORT; it keeps running (stop: ${BERTH_KUBE_DIR:+BERTH_KUBE_DIR=$BERTH_KUBE_DIR }$0 stop)"
  echo "$KUBECONFIG_FILE"
}

cmd_kubeconfig() {
  if ! api_pid >/dev/null || ! ready || [[ ! -f $KUBECONFIG_FILE ]]; then
    log "no kube-apiserver started by this script answers (state in $DIR); start one with: $0 start"
    exit 1
  fi
  echo "$KUBECONFIG_FILE"
}

cmd_env() {
  local f
  f=$(cmd_kubeconfig)
  printf 'export KUBECONFIG=%q\n' "$f"
}

stop_one() { # stop_one NAME PID
  local i
  log "stopping $1 (pid $2)"
  kill -TERM "$2" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    alive "$2" || break
    sleep 0.2
  done
  if alive "$2"; then
    log "$1 (pid $2) still runs after 30s; killing it"
    kill -KILL "$2" 2>/dev/null || true
  fi
  rm -f "$DIR/$1.pid"
}

cmd_stop() {
  local pid stopped=
  if pid=$(api_pid); then stop_one kube-apiserver "$pid"; stopped=1; fi
  if pid=$(etcd_pid); then stop_one etcd "$pid"; stopped=1; fi
  [[ -n $stopped ]] || log "no kube-apiserver or etcd started by this script is running (state in $DIR)"
  return 0
}

cmd_reset() {
  cmd_stop
  if [[ -d $DIR ]]; then
    [[ -f $DIR/.berth-kube ]] || { log "$DIR was not made by this script; not removing it"; exit 1; }
    rm -rf "$DIR"
    log "removed $DIR"
  fi
}

case "${1:-}" in
  start) cmd_start ;;
  kubeconfig) cmd_kubeconfig ;;
  env) cmd_env ;;
  stop) cmd_stop ;;
  reset) cmd_reset ;;
  -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) echo "usage: $0 start|kubeconfig|env|stop|reset" >&2; exit 2 ;;
esac
