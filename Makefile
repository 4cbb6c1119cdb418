# berth — see README.md. Every target installs what it needs on a fresh
# Debian machine with Go when run as root (test/scripts/ensure-deps.sh), or says
# exactly what to install.

GO      ?= go
BIN     ?= bin/berth
AGENT   ?= $(dir $(BIN))berth-agent
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/berth-dev/berth/internal/cli.Version=$(VERSION)
# Two binaries: berth (publishing, fetching, device commands; no applier SDK,
# so one-shot commands start small) and berth-agent (the agent with the
# Compose and Helm appliers; `berth agent` runs it). Static, without cgo: the
# binaries run FROM scratch, cross-compile, and the Go-plugin loader Helm's
# client brings costs nothing (the linker only honours package plugin when
# runtime/cgo is linked; internal/testenv.BuildEnv builds the same way).
# AGENT_TAGS=berth_nohelm gives a Compose-only agent, berth_nocompose a
# Helm-only one.
AGENT_TAGS ?=
# The end-to-end suites start real servers and build images; give them room.
TEST_TIMEOUT ?= 60m

.PHONY: all build test test-unit lint demo deps dockerd kube-apiserver fuzz clean dist

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/berth
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -tags '$(AGENT_TAGS)' -o $(AGENT) ./cmd/berth-agent

deps:
	bash test/scripts/ensure-deps.sh

# A Docker Engine for the tests and the demo: the one on $DOCKER_HOST or
# /var/run/docker.sock, else (as root) a dockerd started in the background
# with its data in /var/lib/berth-test/docker, left running for the next run
# (`bash test/scripts/dockerd.sh stop` ends it).
dockerd: deps
	bash test/scripts/dockerd.sh start

# Unit and end-to-end tests, with the race detector. The end-to-end tests
# start Debian's docker-registry with TLS and htpasswd themselves, and use
# the Docker Engine `dockerd` provides through DOCKER_HOST. The release
# (make dist) is built first: test/e2e checks its archives, .deb and image,
# and runs its arm64 and armv7 binaries under qemu-user-static.
test: deps lint dockerd kube-apiserver dist
	host=$$(bash test/scripts/dockerd.sh host) && \
	  DOCKER_HOST=$$host BERTH_DIST_DIR=$(CURDIR)/$(DIST) $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

# The release into $(DIST)/: for each of PLATFORMS, berth and berth-agent
# (static), berth_<version>_<os>_<arch>.tar.gz and berth_<version>_<arch>.deb
# (nfpm: binaries, systemd unit, /etc/berth/agent.yaml as a conffile, a
# berth system user, completion and man pages), SHA256SUMS, the agent image
# FROM scratch as an OCI layout in $(DIST)/image (IMAGE=HOST/REPO:TAG also
# pushes its index), and sizes.txt. VARIANTS=1 adds the Compose-only and
# Helm-only agents to sizes.txt. No Docker needed.
DIST      ?= dist
PLATFORMS ?= linux/amd64,linux/arm64,linux/arm/v7
IMAGE     ?=
dist:
	$(GO) run ./internal/dist/cmd/dist -out $(DIST) -version $(VERSION) -platforms $(PLATFORMS) \
	  $(if $(VARIANTS),-variants) $(if $(IMAGE),-push $(IMAGE))

# The kube-apiserver the Helm tests run (with Debian's etcd): built once from
# k8s.io/kubernetes through the Go module proxy, then cached in
# ~/.cache/berth-test (test/scripts/kube-apiserver.sh).
kube-apiserver:
	bash test/scripts/kube-apiserver.sh

# Unit tests only (no real servers).
test-unit:
	$(GO) test -race -count=1 -short ./...

lint:
	$(GO) test -count=1 ./test/lint/
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 ./internal/depcheck/

# Fuzz every parser of untrusted input for FUZZTIME each, FUZZJOBS at a
# time (test/scripts/fuzz.sh prints executions and new corpus entries per
# target; logs in fuzz-logs/). Every target gets -fuzzminimizetime (200 runs; Go's default is 60s
# per new input, which left fuzzers minimizing most of the time) so that a
# fuzzer spends its time fuzzing. Extra flags go in FUZZFLAGS, for instance
# `make fuzz FUZZTIME=10m FUZZFLAGS=-parallel=1` on a shared machine.
FUZZTIME ?= 30s
FUZZMINIMIZETIME ?= 200x
FUZZFLAGS ?=
FUZZJOBS ?= 1
FUZZ_TARGETS := \
	source/archive:FuzzExtract source/archive:FuzzDiff \
	state:FuzzParse state:FuzzParseRolloutAnnotation \
	source/lock:FuzzLockCompose source/lock:FuzzLockState \
	source/bundle:FuzzOpen \
	source/replicate:FuzzParse source/replicate:FuzzJobFields \
	reconcile/config:FuzzParse reconcile/config:FuzzSourceFields \
	source/mirror:FuzzEndpoints \
	source/selector:FuzzSelect \
	source/oci:FuzzManifest source/oci:FuzzTags source/oci:FuzzDockerConfig \
	source/oci:FuzzOpenPartial \
	policy/cosign:FuzzReferrerManifest policy/cosign:FuzzBundle \
	policy/cosign:FuzzStatement policy/cosign:FuzzLegacyPayload \
	apply/compose:FuzzLoadProject apply/compose:FuzzEnvFile apply/compose:FuzzLoadAnswer \
	apply/helm:FuzzChartArchive apply/helm:FuzzValues \
	reconcile/api:FuzzHook reconcile/api:FuzzRequest \
	reconcile/store:FuzzParseState \
	source/margo/spec:FuzzParseManifest source/margo/spec:FuzzParseDeployment \
	source/margo/spec:FuzzParseProblem source/margo:FuzzParseTrustBundle \
	source/margo/materialize:FuzzChartFile \
	policy/rollout/statement:FuzzParse policy/inhibit:FuzzParse
fuzz:
	GO=$(GO) JOBS=$(FUZZJOBS) FUZZTIME=$(FUZZTIME) FUZZMINIMIZETIME=$(FUZZMINIMIZETIME) \
	  FUZZFLAGS="$(FUZZFLAGS)" bash test/scripts/fuzz.sh $(FUZZ_TARGETS)

# The main job end to end on this machine: a local registry, a Git
# repository made from examples/, push + sign, verify, pull.
demo: deps build dockerd
	host=$$(bash test/scripts/dockerd.sh host) && DOCKER_HOST=$$host bash test/scripts/demo.sh

# The same flow for a Kubernetes device, with examples/helm-hello: the agent
# installs and upgrades a Helm release on a kube-apiserver with Debian's etcd
# (test/scripts/kube.sh), started for the demo on loopback and stopped after.
# No Docker needed; the first run builds kube-apiserver (about 6 minutes).
.PHONY: demo-helm
demo-helm: deps build kube-apiserver
	bash test/scripts/demo-helm.sh

clean:
	rm -rf bin $(DIST)

# Benchmarks of issue 3: berth against crane in the same run, figures
# reported with b.ReportMetric (timings are never asserted). Needs about
# 4 GiB of free disk in the temp dir; removes what it writes.
.PHONY: bench
bench: deps dockerd
	host=$$(bash test/scripts/dockerd.sh host) && \
	  DOCKER_HOST=$$host $(GO) test -run='^$$' -bench=. -benchtime=1x -timeout 60m ./test/bench/
