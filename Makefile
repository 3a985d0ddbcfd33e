# wsscale: common developer entry points. Every target is safe to run on a fresh clone.
SHELL := /usr/bin/env bash
GO ?= go
BIN := bin
MODULE := github.com/wsscale/wsscale

# How the product's binaries are built, in one place: `make build` and the Dockerfile (through
# build-binary) use exactly these flags. Static (no cgo), reproducible paths, version by ldflags.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
GO_BUILD_ENV := CGO_ENABLED=0
GO_BUILD_FLAGS := -trimpath
GO_LDFLAGS := -s -w -X $(MODULE)/pkg/version.version=$(VERSION) -X $(MODULE)/pkg/version.revision=$(COMMIT)

.PHONY: all build demo test test-unit verify verify-gofmt update-gofmt vet echo-run clean

all: build

## build: compile every binary of the product into bin/ (cmd/echo as bin/wsecho).
# cmd/echo is installed as wsecho, so that `wsecho load` is not the shell's builtin echo.
build:
	$(GO_BUILD_ENV) $(GO) build $(GO_BUILD_FLAGS) -ldflags "$(GO_LDFLAGS)" -o $(BIN)/ ./cmd/...
	mv -f $(BIN)/echo $(BIN)/wsecho

## build-binary: one binary, BINARY=adapter|echo, into $(BIN)/ (the Dockerfile's build step; GOOS/GOARCH from the environment).
.PHONY: build-binary
build-binary:
	@test -n "$(BINARY)" -a -d cmd/$(BINARY) || { echo "BINARY must name a directory of cmd/ (adapter, echo)"; exit 1; }
	$(GO_BUILD_ENV) $(GO) build $(GO_BUILD_FLAGS) -ldflags "$(GO_LDFLAGS)" -o $(BIN)/$(BINARY) ./cmd/$(BINARY)

## kubectl-wsscale: the kubectl plugin alone into $(BIN)/; on PATH, kubectl runs it as `kubectl wsscale`.
.PHONY: kubectl-wsscale
kubectl-wsscale:
	$(GO_BUILD_ENV) $(GO) build $(GO_BUILD_FLAGS) -ldflags "$(GO_LDFLAGS)" -o $(BIN)/kubectl-wsscale ./cmd/kubectl-wsscale

## demo: the README's main command.
demo:
	hack/demo.sh

## test: the whole test suite, as CI runs it (race detector on).
test: verify test-unit

## test-unit: go test with the race detector over every package (the end-to-end suite alone takes minutes: a long -timeout).
test-unit:
	$(GO) test -race -count=1 -timeout 40m ./...

## verify: static checks that must pass before a change lands.
verify: verify-gofmt vet verify-crds verify-chart verify-chart-crds verify-dashboard

verify-gofmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^hack/tools/')); \
	if [ -n "$$out" ]; then echo "gofmt needed in:"; echo "$$out"; exit 1; fi

update-gofmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

# --- generated API code (the ScaleGuard CRD and deepcopy) ---------------------------------
# controller-gen is pinned in hack/tools/controller-gen and built into .local/bin with its own stamp.
CRD_DIR := config/crd/bases
RBAC_DIR := config/rbac
API_PKGS := ./pkg/apis/...
CONTROLLER_PKGS := ./pkg/policy/controller/...

.PHONY: controller-gen update-crds verify-crds

## controller-gen: build the pinned controller-gen into .local/bin (a no-op when it is current).
controller-gen:
	@hack/build-controller-gen.sh >/dev/null

## update-crds: regenerate the ScaleGuard CRD (config/crd/bases), the controller's ClusterRole
## (config/rbac) and the API's deepcopy functions.
update-crds: controller-gen
	.local/bin/controller-gen object paths=$(API_PKGS)
	rm -f $(CRD_DIR)/*.yaml $(RBAC_DIR)/*.yaml
	.local/bin/controller-gen crd:crdVersions=v1 paths=$(API_PKGS) output:crd:artifacts:config=$(CRD_DIR)
	.local/bin/controller-gen rbac:roleName=wsscale-scaleguard paths=$(CONTROLLER_PKGS) output:rbac:artifacts:config=$(RBAC_DIR)

## verify-crds: fail when the generated CRD, ClusterRole or deepcopy functions are stale.
verify-crds: controller-gen
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir -p "$$tmp/crd" "$$tmp/rbac" "$$tmp/api"; \
	cp -r pkg/apis "$$tmp/api/"; \
	.local/bin/controller-gen object paths=$(API_PKGS) && \
	.local/bin/controller-gen crd:crdVersions=v1 paths=$(API_PKGS) output:crd:artifacts:config="$$tmp/crd" && \
	.local/bin/controller-gen rbac:roleName=wsscale-scaleguard paths=$(CONTROLLER_PKGS) output:rbac:artifacts:config="$$tmp/rbac" || exit 1; \
	stale=0; \
	if ! diff -r "$$tmp/api/apis" pkg/apis >/dev/null; then \
		diff -r "$$tmp/api/apis" pkg/apis; rm -rf pkg/apis; cp -r "$$tmp/api/apis" pkg/apis; stale=1; fi; \
	if ! diff -r "$$tmp/crd" $(CRD_DIR); then stale=1; fi; \
	if ! diff -r "$$tmp/rbac" $(RBAC_DIR); then stale=1; fi; \
	if [ $$stale = 1 ]; then echo "generated API files are stale: run 'make update-crds'"; exit 1; fi

## bench-echo: benchmark the reference server (wsecho) against a Node.js ws echo server side by side (docs/benchmarks.md).
.PHONY: bench-echo
bench-echo:
	hack/bench-echo.sh

## bench-scale: race wsscale, wsscale via Prometheus and KEDA on the same surge (docs/benchmarks.md; needs root, builds KEDA).
.PHONY: bench-scale
bench-scale:
	hack/bench-scale.sh

## echo-run: run the reference WebSocket server locally on :8080 (metrics on :9090).
echo-run: build
	$(BIN)/wsecho

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
	mv -f $(LOCAL)/bin/echo $(LOCAL)/bin/wsecho
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

## update-dashboard: regenerate the websocket-app chart's Grafana dashboard from code (hack/dashboard, Grafana Foundation SDK).
DASHBOARD := deploy/helm/websocket-app/files/dashboards/websocket-app.json
.PHONY: update-dashboard verify-dashboard
update-dashboard:
	cd hack/dashboard && $(GO) run . $(CURDIR)/$(DASHBOARD)

## verify-dashboard: fail when the committed dashboard is not what hack/dashboard generates.
verify-dashboard:
	@tmp=$$(mktemp); trap 'rm -f "$$tmp"' EXIT; \
	(cd hack/dashboard && $(GO) run . "$$tmp") && diff -u $(DASHBOARD) "$$tmp" >/dev/null \
		|| { echo "$(DASHBOARD) is stale: run make update-dashboard"; exit 1; }

## verify-manifests: fail when deploy/manifests/ is not what the charts render today.
verify-manifests:
	$(GO) test -count=1 ./test/e2e/ -run TestWebSocketAppManifestsAreCurrent

# --- the adapter chart (deploy/helm/wsscale) ---------------------------------------------
HELM ?= $(LOCAL)/bin/helm
CHART := deploy/helm/wsscale
CHART_KUBE_VERSION := 1.37.0

.PHONY: verify-chart update-chart-crds verify-chart-crds

## verify-chart: helm lint --strict and helm template of the adapter chart with each ci/*-values.yaml (offline, seconds;
## the pinned helm is built first when missing).
verify-chart: tools
	@for f in $(CHART)/ci/*-values.yaml; do \
		$(HELM) lint --strict --quiet $(CHART) -f $$f >/dev/null || { $(HELM) lint --strict $(CHART) -f $$f; exit 1; }; \
		$(HELM) template wsscale $(CHART) -n wsscale-system --kube-version $(CHART_KUBE_VERSION) -f $$f >/dev/null || exit 1; \
	done; echo "chart $(CHART): lint and template clean for $$(ls $(CHART)/ci/*-values.yaml | wc -l) scenarios"

# The chart renders the ScaleGuard CRD and the controller's ClusterRole rules from copies of the
# generated files in config/ (Helm cannot read files outside the chart).
CHART_CRD_SRC := config/crd/bases
CHART_ROLE_SRC := config/rbac/role.yaml

## update-chart-crds: copy the generated CRDs and the controller's role from config/ into the chart.
update-chart-crds:
	@rm -f $(CHART)/files/crds/*.yaml $(CHART)/files/rbac/*.yaml
	@if ls $(CHART_CRD_SRC)/*.yaml >/dev/null 2>&1; then cp $(CHART_CRD_SRC)/*.yaml $(CHART)/files/crds/; fi
	@if [ -f $(CHART_ROLE_SRC) ]; then cp $(CHART_ROLE_SRC) $(CHART)/files/rbac/scaleguard-role.yaml; fi
	@ls $(CHART)/files/crds/*.yaml $(CHART)/files/rbac/*.yaml 2>/dev/null || echo "no generated CRD or role in config/ yet"

## verify-chart-crds: fail when the chart's copies differ from config/.
verify-chart-crds:
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; mkdir -p $$tmp/crds $$tmp/rbac; \
	if ls $(CHART_CRD_SRC)/*.yaml >/dev/null 2>&1; then cp $(CHART_CRD_SRC)/*.yaml $$tmp/crds/; fi; \
	if [ -f $(CHART_ROLE_SRC) ]; then cp $(CHART_ROLE_SRC) $$tmp/rbac/scaleguard-role.yaml; fi; \
	diff -r -x .gitkeep -x README.md $$tmp/crds $(CHART)/files/crds && diff -r -x .gitkeep $$tmp/rbac $(CHART)/files/rbac \
		|| { echo "the chart's CRD/role copies are stale: run make update-chart-crds"; exit 1; }
# --- end of the adapter chart -------------------------------------------------------------
