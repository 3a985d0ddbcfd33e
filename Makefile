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

## echo-run: run the reference WebSocket server locally on :8080 (metrics on :9090).
echo-run: build
	$(BIN)/echo

clean:
	rm -rf $(BIN)
