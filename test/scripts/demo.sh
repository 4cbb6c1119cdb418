#!/usr/bin/env bash
# demo.sh — berth's main job end to end on this machine (run by `make demo`):
# a local registry with TLS and a password, a Git repository made from
# examples/compose-hello, then push + sign, verify, and pull it back.
# Everything lives in a temporary folder; the registry stops at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BERTH=${BERTH:-$ROOT/bin/berth}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-demo.XXXXXX")
REG_PID=

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
cleanup() {
  # The demo's app: containers and network of the project berth-line-3-web.
  if command -v docker >/dev/null 2>&1; then
    ids=$(docker ps -aq --filter label=com.docker.compose.project=berth-line-3-web 2>/dev/null || true)
    [[ -n $ids ]] && docker rm -f $ids >/dev/null 2>&1
    docker network rm berth-line-3-web_default >/dev/null 2>&1 || true
  fi
  [[ -n $REG_PID ]] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null || true
}
trap cleanup EXIT

[[ -x $BERTH ]] || { echo "demo: $BERTH missing: run 'make build' first" >&2; exit 1; }
for tool in docker-registry openssl htpasswd git curl; do
  command -v "$tool" >/dev/null || { echo "demo: $tool missing: run 'make deps' as root (or see README)" >&2; exit 1; }
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
[[ -n $PORT ]] || { echo "demo: no free port found" >&2; exit 1; }
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
for _ in $(seq 1 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert ca.pem "https://$REG/v2/" || true)
  [[ $code == 401 ]] && break
  sleep 0.1
done
[[ $code == 401 ]] || { echo "demo: registry did not start:"; tail -20 registry.log; exit 1; } >&2
echo "registry: https://$REG (user demo)"

export DOCKER_CONFIG=$WORK/docker
say "Logging in (credentials go to \$DOCKER_CONFIG/config.json)"
printf '%s\n' "$PASSWORD" | run "$BERTH" login "$REG" -u demo --password-stdin --ca-file ca.pem

say "Building the app image FROM scratch and pushing it (no public registry needed)"
(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -o "$WORK/hello" ./test/images/hello)
(cd "$ROOT" && go run ./test/tools/pushimage -binary "$WORK/hello" -ref "$REG/acme/hello:1.0.0" -ca-file "$WORK/ca.pem")

say "Making a Git repository of desired state from examples/compose-hello"
cp -r "$ROOT/examples/compose-hello" fleet
sed -i "s|127.0.0.1:5000|$REG|" fleet/apps/web/compose.yaml
git -C fleet init -q -b main
git -C fleet add -A
GIT_AUTHOR_DATE=2026-01-02T03:04:05Z GIT_COMMITTER_DATE=2026-01-02T03:04:05Z \
  git -C fleet -c user.name=ci -c user.email=ci@example.com commit -q -m "line 3: web app"
git -C fleet remote add origin https://ci:token@git.example.com/acme/fleet.git
git -C fleet log --oneline

say "Generating a cosign key pair"
export COSIGN_PASSWORD=demo-password
run "$BERTH" generate-key --prefix "$WORK/cosign"

say "Pushing and signing (pins the image to its digest first)"
run "$BERTH" push fleet "oci://$REG/fleet/line-3:v1.0.0" -t canary --sign-key "$WORK/cosign.key" --ca-file ca.pem

say "Listing the repository's tags (signature tags left out)"
run "$BERTH" list "oci://$REG/fleet/line-3" --ca-file ca.pem

say "Verifying the signature of what canary points at"
run "$BERTH" verify "oci://$REG/fleet/line-3:canary" --key cosign.pub --ca-file ca.pem

say "Pulling it back: verify, then stream and extract"
run "$BERTH" pull "oci://$REG/fleet/line-3:canary" -o pulled --key cosign.pub --ca-file ca.pem
echo "the Compose file the device will run (image pinned by digest):"
cat pulled/apps/web/compose.yaml

say "An artifact nobody signed is refused"
echo "unsigned change" > fleet/NOTES
git -C fleet add -A && git -C fleet -c user.name=ci -c user.email=ci@example.com commit -q -m unsigned
"$BERTH" push fleet "oci://$REG/fleet/line-3:v1.0.1" --ca-file ca.pem --output json > /dev/null
if "$BERTH" verify "oci://$REG/fleet/line-3:v1.0.1" --key cosign.pub --ca-file ca.pem; then
  echo "demo: an unsigned artifact verified!" >&2; exit 1
fi

say "A device tracking >=1.0.0 <2.0.0: the newest in range (v1.0.1) is refused until it is signed"
mkdir -p device
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
  compose: {waitTimeout: 1m}    # apply Compose apps on this machine's Docker Engine
YAML
run "$BERTH" agent --config device/agent.yaml --check-config
if run "$BERTH" agent --config device/agent.yaml --once; then
  echo "demo: the agent applied v1.0.1, which nobody signed!" >&2; exit 1
fi
echo "(refused: v1.0.1 is the newest in range but unsigned; nothing was switched in)"
"$BERTH" sign "oci://$REG/fleet/line-3:v1.0.1" --sign-key "$WORK/cosign.key" --ca-file ca.pem
run "$BERTH" agent --config device/agent.yaml --once
run "$BERTH" status --config device/agent.yaml
run "$BERTH" history line-3 --config device/agent.yaml
echo "the device's current revision: $(readlink device/state/sources/line-3/current)"

say "The app runs on the Docker Engine (${DOCKER_HOST:-local socket}), pinned by digest and healthy"
run curl -fsS http://127.0.0.1:8088/

say "Done: pushed, signed, verified, pulled, and applied on a device through a TLS registry with auth"
echo "(the demo's container is removed on exit; run the steps by hand to keep it)"
echo "work folder: $WORK"
if [[ -n ${DOCKER_HOST:-} && $DOCKER_HOST != unix:///var/run/docker.sock ]]; then
  echo
  echo "The Docker Engine the demo used is not the system one. To reach it with docker or"
  echo "with your own berth agent, set:"
  echo "    export DOCKER_HOST=$DOCKER_HOST"
  echo "(or: eval \"\$(bash test/scripts/dockerd.sh env)\"; stop it with: bash test/scripts/dockerd.sh stop)"
fi
