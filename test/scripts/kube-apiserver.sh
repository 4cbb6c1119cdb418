#!/usr/bin/env bash
# kube-apiserver.sh builds a kube-apiserver for berth's Helm tests and demo
# and prints the path of the binary. Built once, then cached.
#
#   test/scripts/kube-apiserver.sh          build if missing; print the path
#   test/scripts/kube-apiserver.sh --check  print the path if cached, else exit 1
#
# Kubernetes publishes no kube-apiserver module that builds on its own: the
# k8s.io/kubernetes module replaces every k8s.io/<staging module> by a folder
# of its own repository. A throw-away wrapper module requires
# k8s.io/kubernetes at KUBE_VERSION and replaces each staging module by its
# v0.Y.Z release instead; everything comes through the Go module proxy. The
# first build takes about 6 minutes on 2 idle cores (20 or more on a busy
# machine); it reports its stages and, every BERTH_PROGRESS_EVERY seconds
# (default 20), how many of the packages are compiled. The binary is kept in
# ${BERTH_TEST_CACHE:-~/.cache/berth-test}.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.34.3}
cache=${BERTH_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/berth-test}
bin=$cache/kube-apiserver-$KUBE_VERSION

if [[ -x $bin ]]; then
  echo "$bin"
  exit 0
fi
if [[ ${1:-} == --check ]]; then
  echo "kube-apiserver.sh: no kube-apiserver $KUBE_VERSION in $cache; run test/scripts/kube-apiserver.sh to build it" >&2
  exit 1
fi

go=${GO:-go}
command -v "$go" >/dev/null || { echo "kube-apiserver.sh: Go is needed to build kube-apiserver" >&2; exit 1; }
mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

staging_minor=${KUBE_VERSION#v1.} # 34.3
cat >go.mod <<MOD
module berth.test/kube-apiserver

go 1.24.0
MOD
export GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local}
every=${BERTH_PROGRESS_EVERY:-20}
start=$SECONDS
say() { echo "kube-apiserver.sh: $* ($(elapsed))" >&2; }
elapsed() { local s=$((SECONDS - start)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
say "building kube-apiserver $KUBE_VERSION once (about 6 minutes on 2 idle cores, more on a busy machine; then cached in $cache)"
say "1/3 downloading k8s.io/kubernetes $KUBE_VERSION through the Go module proxy"
modfile=$("$go" mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[[ -f $modfile ]] || { echo "kube-apiserver.sh: could not download k8s.io/kubernetes@$KUBE_VERSION through the module proxy" >&2; exit 1; }
{
  echo "require k8s.io/kubernetes $KUBE_VERSION"
  echo "replace ("
  sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/src/.*#\1#p' "$modfile" |
    while read -r m; do echo "	$m => $m v0.$staging_minor"; done
  echo ")"
} >>go.mod
say "2/3 resolving the packages of kube-apiserver (downloads its modules)"
total=$("$go" list -deps k8s.io/kubernetes/cmd/kube-apiserver | wc -l)
say "3/3 compiling up to $total packages (those not in Go's build cache)"
ver="-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
  -X k8s.io/component-base/version.gitMajor=1 \
  -X k8s.io/component-base/version.gitMinor=${staging_minor%%.*} \
  -X k8s.io/component-base/version.gitTreeState=clean \
  -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
# -v names each package as it is compiled: its log counts them.
"$go" build -v -trimpath -ldflags "-s -w $ver" -o "$bin.tmp" k8s.io/kubernetes/cmd/kube-apiserver 2>"$work/build.log" &
pid=$!
last=$SECONDS
while kill -0 "$pid" 2>/dev/null; do
  sleep 1
  if ((SECONDS - last >= every)); then
    say "compiled $(grep -cv '^#\|^ ' "$work/build.log" || true) of up to $total packages"
    last=$SECONDS
  fi
done
if ! wait "$pid"; then
  echo "kube-apiserver.sh: go build failed; its last lines:" >&2
  tail -n 40 "$work/build.log" >&2
  exit 1
fi
mv "$bin.tmp" "$bin"
say "built $bin"
echo "$bin"
