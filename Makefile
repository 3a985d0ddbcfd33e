# wsscale: common developer entry points. Every target is safe to run on a fresh clone.
SHELL := /usr/bin/env bash
GO ?= go
BIN := bin

.PHONY: all build demo test test-unit verify verify-gofmt update-gofmt vet echo-run clean

all: build

## build: compile every binary of the product into bin/.
build:
	$(GO) build -o $(BIN)/ ./cmd/...

## demo: the README's main command.
demo:
	hack/demo.sh

## test: the whole test suite, as CI runs it (race detector on).
test: verify test-unit

## test-unit: go test with the race detector over every package.
test-unit:
	$(GO) test -race -count=1 ./...

## verify: static checks that must pass before a change lands.
verify: verify-gofmt vet

verify-gofmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^hack/tools/')); \
	if [ -n "$$out" ]; then echo "gofmt needed in:"; echo "$$out"; exit 1; fi

update-gofmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

## bench-echo: benchmark cmd/echo against a Node.js ws echo server side by side (docs/benchmarks.md).
.PHONY: bench-echo
bench-echo:
	hack/bench-echo.sh

## echo-run: run the reference WebSocket server locally on :8080 (metrics on :9090).
echo-run: build
	$(BIN)/echo

clean:
	rm -rf $(BIN)

# --- local cluster (test/localcluster) -------------------------------------------------
# The pinned control plane is built into .local/bin (git-ignored) and rebuilt only when
# the pins in hack/tools change. The cluster needs root (it creates namespaces).
LOCAL := .local

.PHONY: tools cluster-up cluster-down

## tools: build the pinned kube-apiserver, kube-controller-manager, kube-scheduler, etcd and helm into .local/bin.
tools:
	hack/build-tools.sh

## cluster-up: start the local cluster in the background; returns once it is ready (kubeconfig: .local/kubeconfig).
cluster-up: tools
	$(GO) build -o $(LOCAL)/bin/localcluster ./test/cmd/localcluster
	$(GO) build -o $(LOCAL)/bin/ ./cmd/... ./test/cmd/testhost
	$(LOCAL)/bin/localcluster up --detach --bin-dir $(LOCAL)/bin --kubeconfig $(LOCAL)/kubeconfig \
		--pid-file $(LOCAL)/cluster.pid --log-file $(LOCAL)/cluster.log

## cluster-down: stop the local cluster started by cluster-up and wait until nothing of it is left.
cluster-down:
	@$(GO) build -o $(LOCAL)/bin/localcluster ./test/cmd/localcluster || echo "(using the previously built localcluster)"
	@if [ -x $(LOCAL)/bin/localcluster ]; then $(LOCAL)/bin/localcluster down --pid-file $(LOCAL)/cluster.pid --kubeconfig $(LOCAL)/kubeconfig; \
	else echo "No local cluster binary ($(LOCAL)/bin/localcluster); nothing to stop."; fi
# --- end of local cluster ---------------------------------------------------------------

# --- charts ------------------------------------------------------------------------------
.PHONY: lint-charts update-manifests verify-manifests

## lint-charts: helm lint --strict of the websocket-app chart with each ci/ scenario.
lint-charts:
	@for f in deploy/helm/websocket-app/ci/*-values.yaml; do \
	  $(LOCAL)/bin/helm lint --strict deploy/helm/websocket-app -f $$f >/dev/null || { echo "lint failed: $$f"; exit 1; }; \
	done; echo "websocket-app: every ci scenario lints"

## update-manifests: render every chart scenario into deploy/manifests/ for kubectl users.
update-manifests:
	hack/update-manifests.sh

## verify-manifests: fail when deploy/manifests/ is not what the charts render today.
verify-manifests:
	$(GO) test -count=1 ./test/e2e/ -run TestWebSocketAppManifestsAreCurrent
