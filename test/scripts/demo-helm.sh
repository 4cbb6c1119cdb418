#!/usr/bin/env bash
# demo-helm.sh — berth on a Kubernetes device, end to end on this machine
# (run by `make demo-helm`): a local registry with TLS and a password, a Git
# repository made from examples/helm-hello, push + sign, verify, pull, then
# the device agent installs the Helm release on a kube-apiserver with its own
# etcd (test/scripts/kube.sh), upgrades it, and sends nothing to the API
# server when a revision leaves the app unchanged. Everything lives in a
# temporary folder; the registry, etcd and kube-apiserver stop at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BERTH=${BERTH:-$ROOT/bin/berth}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-demo-helm.XXXXXX")
REG_PID=
AGENT_PID=
export BERTH_KUBE_DIR=$WORK/kube # a fresh API server of the demo's own

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
die() { echo "demo-helm: $*" >&2; exit 1; }
cleanup() {
  local code=$?
  if ((code != 0)); then
    echo "demo-helm: FAILED (exit $code); logs in $WORK (registry.log, kube/kube-apiserver.log, kube/etcd.log)" >&2
  fi
  [[ -n $AGENT_PID ]] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
  bash "$ROOT/test/scripts/kube.sh" stop 2>/dev/null || true
  [[ -n $REG_PID ]] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null || true
}
trap cleanup EXIT

[[ -x $BERTH ]] || die "$BERTH missing: run 'make build' first"
for tool in docker-registry openssl htpasswd git curl etcd; do
  command -v "$tool" >/dev/null || die "$tool missing: run 'make deps' as root (or see README)"
done

say "Starting a registry with TLS and htpasswd auth (Debian's docker-registry) in $WORK"
cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=berth-demo-ca -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > san.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile san.ext -out server.pem 2>/dev/null
PASSWORD=$(openssl rand -hex 12)
htpasswd -Bbn demo "$PASSWORD" > htpasswd 2>/dev/null
PORT=
for _ in $(seq 1 50); do
  p=$((20000 + RANDOM % 20000))
  if ! (echo > "/dev/tcp/127.0.0.1/$p") 2>/dev/null; then PORT=$p; break; fi
done
[[ -n $PORT ]] || die "no free port found"
REG=127.0.0.1:$PORT
cat > registry.yml <<YAML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $WORK/registry-data}, delete: {enabled: true}}
http: {addr: $REG, tls: {certificate: $WORK/server.pem, key: $WORK/server.key}}
auth: {htpasswd: {realm: berth-demo, path: $WORK/htpasswd}}
YAML
docker-registry serve registry.yml > registry.log 2>&1 &
REG_PID=$!
code=
for _ in $(seq 1 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert ca.pem "https://$REG/v2/" || true)
  [[ $code == 401 ]] && break
  sleep 0.1
done
[[ $code == 401 ]] || { echo "demo-helm: registry did not start:"; tail -20 registry.log; exit 1; } >&2
echo "registry: https://$REG (user demo)"

say "Starting etcd and kube-apiserver on loopback (test/scripts/kube.sh; RBAC, token auth, audit log)"
KUBECONFIG_FILE=$(bash "$ROOT/test/scripts/kube.sh" start)
API=$(sed -n 's/^ *server: //p' "$KUBECONFIG_FILE")
TOKEN=$(cut -d, -f1 "$BERTH_KUBE_DIR/tokens.csv")
AUDIT=$BERTH_KUBE_DIR/audit.log
echo "kube-apiserver: $API (kubeconfig $KUBECONFIG_FILE)"

# kget PATH: GET an object from the API server as YAML, with the demo's token.
kget() {
  curl -fsS --cacert "$BERTH_KUBE_DIR/ca.pem" -H "Authorization: Bearer $TOKEN" \
    -H 'Accept: application/yaml' "$API$1"
}
# kfield PATH KEY: the value of "KEY: value" at the start of a line of the object.
kfield() { kget "$1" | sed -n "s/^  *$2: //p" | head -1 | tr -d '"'; }
# writes_since OFFSET: write requests (create, update, patch, delete) the
# agent's user sent since byte OFFSET of the audit log, one line each.
writes_since() {
  tail -c +$(($1 + 1)) "$AUDIT" | grep '"stage":"ResponseComplete"' | grep '"username":"berth-admin"' |
    grep -E '"verb":"(create|update|patch|delete|deletecollection)"' |
    sed -E 's/.*"verb":"([a-z]+)".*"requestURI":"([^"]*)".*/\1 \2/;t;s/.*"requestURI":"([^"]*)".*"verb":"([a-z]+)".*/\2 \1/' || true
}
audit_size() { stat -c %s "$AUDIT"; }

export DOCKER_CONFIG=$WORK/docker
say "Logging in (credentials go to \$DOCKER_CONFIG/config.json)"
printf '%s\n' "$PASSWORD" | run "$BERTH" login "$REG" -u demo --password-stdin --ca-file ca.pem

say "Making a Git repository of desired state from examples/helm-hello"
cp -r "$ROOT/examples/helm-hello" fleet
git -C fleet init -q -b main
git -C fleet add -A
commit() { # commit DATE MESSAGE
  GIT_AUTHOR_DATE=$1 GIT_COMMITTER_DATE=$1 \
    git -C fleet -c user.name=ci -c user.email=ci@example.com commit -q -m "$2"
}
commit 2026-01-02T03:04:05Z "line 3: hello chart"
git -C fleet remote add origin https://ci:token@git.example.com/acme/fleet.git
git -C fleet log --oneline
echo "the desired state:"
sed -n '/^apps:/,$p' fleet/berth.yaml

say "Generating a cosign key pair"
export COSIGN_PASSWORD=demo-password
run "$BERTH" generate-key --prefix "$WORK/cosign"

say "Pushing and signing v1.0.0 (the chart folder is inside the signed artifact)"
run "$BERTH" push fleet "oci://$REG/fleet/line-3:v1.0.0" -t canary --sign-key "$WORK/cosign.key" --ca-file ca.pem

say "Verifying the signature of what canary points at"
run "$BERTH" verify "oci://$REG/fleet/line-3:canary" --key cosign.pub --ca-file ca.pem

say "Pulling it back: verify, then stream and extract"
run "$BERTH" pull "oci://$REG/fleet/line-3:canary" -o pulled --key cosign.pub --ca-file ca.pem
echo "the chart the device will install:"
(cd pulled && find charts -type f | sort)

say "A device tracking >=1.0.0 <2.0.0 with apply.helm: the agent installs the release"
mkdir -p device/values
cat > device/agent.yaml <<YAML
stateDir: $WORK/device/state
sources:
  - name: line-3
    url: oci://$REG/fleet/line-3
    ref: {semver: ">=1.0.0 <2.0.0"}
    interval: 1m
    verify: {keys: [$WORK/cosign.pub]}
    credentials: {dockerConfig: $DOCKER_CONFIG/config.json}
    caFile: $WORK/ca.pem
apply:
  helm:
    kubeconfig: $KUBECONFIG_FILE   # the cluster the device runs (k3s: /etc/rancher/k3s/k3s.yaml)
    valuesDir: $WORK/device/values # <app>.yaml: device-local values, never in the artifact
YAML
cat > device/values/hello.yaml <<YAML
# This device's own values for the app "hello": on top of the artifact's.
device: line-3-station-7
apiToken: $(openssl rand -hex 8)
YAML
echo "device-local values ($WORK/device/values/hello.yaml): device name and an API token"
run "$BERTH" agent --config device/agent.yaml --check-config
run "$BERTH" agent --config device/agent.yaml --once
run "$BERTH" status --config device/agent.yaml

say "What the API server holds now (GET with the device's token)"
cm=$(kget /api/v1/namespaces/hello/configmaps/hello-greeting) ||
  die "the agent did not create the ConfigMap hello/hello-greeting"
echo "ConfigMap hello/hello-greeting:"
printf '%s\n' "$cm" | sed -n '/^data:/,/^[a-z]/p' | sed '$d'
greeting=$(kfield /api/v1/namespaces/hello/configmaps/hello-greeting greeting)
device=$(kfield /api/v1/namespaces/hello/configmaps/hello-greeting device)
[[ $greeting == "hello from berth" ]] || die "the ConfigMap's greeting is '$greeting', want 'hello from berth'"
[[ $device == line-3-station-7 ]] || die "the ConfigMap's device is '$device', want the device-local value"
echo "Service hello/hello: clusterIP $(kfield /api/v1/namespaces/hello/services/hello clusterIP)"
token=$(kfield /api/v1/namespaces/hello/secrets/hello-api token)
[[ $(printf %s "$token" | base64 -d) == "$(sed -n 's/^apiToken: //p' device/values/hello.yaml)" ]] ||
  die "the Secret's token is not the device-local apiToken"
echo "Secret hello/hello-api: token from the device-local values file"
kget /api/v1/namespaces/hello/secrets/sh.helm.release.v1.hello.v1 >/dev/null ||
  die "no Helm release record sh.helm.release.v1.hello.v1"
echo "Helm release record: secret hello/sh.helm.release.v1.hello.v1"

say "v1.1.0 changes the greeting: the agent upgrades the release (revision 2)"
sed -i 's/greeting: "hello from berth"/greeting: "hello again, from v1.1.0"/' fleet/berth.yaml
git -C fleet diff --stat
git -C fleet add -A
commit 2026-01-03T03:04:05Z "line 3: new greeting"
run "$BERTH" push fleet "oci://$REG/fleet/line-3:v1.1.0" --sign-key "$WORK/cosign.key" --ca-file ca.pem
run "$BERTH" agent --config device/agent.yaml --once
greeting=$(kfield /api/v1/namespaces/hello/configmaps/hello-greeting greeting)
echo "ConfigMap hello/hello-greeting: greeting: $greeting"
[[ $greeting == "hello again, from v1.1.0" ]] || die "the upgrade did not change the greeting (got '$greeting')"
kget /api/v1/namespaces/hello/secrets/sh.helm.release.v1.hello.v2 >/dev/null ||
  die "no Helm release revision 2 after the upgrade"
run "$BERTH" status --config device/agent.yaml

say "v1.2.0 changes only a file no app reads: applied, and not one write to the API server (audit log)"
echo "line 3 runs the hello chart" > fleet/NOTES
git -C fleet add -A
commit 2026-01-04T03:04:05Z "line 3: notes"
run "$BERTH" push fleet "oci://$REG/fleet/line-3:v1.2.0" --sign-key "$WORK/cosign.key" --ca-file ca.pem
mark=$(audit_size)
run "$BERTH" agent --config device/agent.yaml --once
writes=$(writes_since "$mark")
if [[ -n $writes ]]; then
  echo "$writes" >&2
  die "a revision with the Helm app unchanged sent write requests to the API server (above)"
fi
reads=$(tail -c +$((mark + 1)) "$AUDIT" | grep '"stage":"ResponseComplete"' | grep -c '"username":"berth-admin"' || true)
echo "audit log: the agent made $reads requests, all reads: the release's chart digest and values are unchanged"
kget /api/v1/namespaces/hello/secrets/sh.helm.release.v1.hello.v3 >/dev/null 2>&1 &&
  die "an unchanged app made Helm release revision 3"
run "$BERTH" status --config device/agent.yaml

say "Drift: the agent as a daemon puts back a ConfigMap edited by hand"
sed -i 's/interval: 1m/interval: 5s/' device/agent.yaml
echo "(interval 5s for the demo; drift is checked every interval)"
"$BERTH" agent --config device/agent.yaml >device/agent.log 2>&1 &
AGENT_PID=$!
for _ in $(seq 1 150); do [[ -S device/state/berth.sock ]] && break; sleep 0.2; done
[[ -S device/state/berth.sock ]] || { tail -20 device/agent.log >&2; die "the agent did not start"; }
printf '$ curl -X PATCH .../configmaps/hello-greeting  {"data":{"greeting":"edited by hand"}}\n'
curl -fsS -o /dev/null --cacert "$BERTH_KUBE_DIR/ca.pem" -H "Authorization: Bearer $TOKEN" -X PATCH \
  -H 'Content-Type: application/merge-patch+json' -d '{"data":{"greeting":"edited by hand"}}' \
  "$API/api/v1/namespaces/hello/configmaps/hello-greeting"
echo "ConfigMap hello/hello-greeting: greeting: $(kfield /api/v1/namespaces/hello/configmaps/hello-greeting greeting)"
restored=
for _ in $(seq 1 60); do
  greeting=$(kfield /api/v1/namespaces/hello/configmaps/hello-greeting greeting)
  [[ $greeting == "hello again, from v1.1.0" ]] && { restored=1; break; }
  sleep 1
done
[[ -n $restored ]] || { tail -20 device/agent.log >&2; die "the agent did not restore the ConfigMap within 60s"; }
echo "ConfigMap hello/hello-greeting: greeting: $greeting (restored by the agent)"
grep -h 'drift' device/agent.log | tail -3 || true
run "$BERTH" status --config device/agent.yaml
kill "$AGENT_PID" && wait "$AGENT_PID" 2>/dev/null || true
AGENT_PID=

say "Done: pushed, signed, verified, pulled, and installed, upgraded and kept as a Helm release on Kubernetes"
echo "(etcd and kube-apiserver stop on exit; run 'BERTH_KUBE_DIR=$BERTH_KUBE_DIR bash test/scripts/kube.sh start' to look again)"
echo "work folder: $WORK"
