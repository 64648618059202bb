# Lockkeeper. `make demo` shows the runbook working; `make test` runs every
# test tier but the benchmarks. Both install what they need and reuse the
# control plane cached under $${XDG_CACHE_HOME:-$$HOME/.cache}/lockkeeper.

SHELL := /bin/bash
CARGO ?= cargo
CLUSTER := e2e/cluster
# Compiled dependencies are cached outside the clone, like the control plane,
# so a fresh clone's `make test` reuses them. Set CARGO_TARGET_DIR to override.
export CARGO_TARGET_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/lockkeeper/target

.PHONY: all build test lint fmt crds check-crds unit integration demo \
        cluster-up cluster-down tools bench clean

all: build

build:
	$(CARGO) build --release --locked

## tools: build or reuse the local control plane binaries (etcd, kube-*, kwok, helm)
tools:
	$(CLUSTER)/build.sh >/dev/null

## test: format and lint checks, CRDs up to date, unit, property and integration tests
test: lint check-crds tools
	$(CLUSTER)/with-cluster.sh $(CARGO) test --locked --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## crds: regenerate crds/ from the API types
crds:
	$(CARGO) run --quiet --locked -- crd > crds/lockkeeper.dev.yaml

## check-crds: fail when crds/ is out of date with the API types
check-crds:
	@$(CARGO) run --quiet --locked -- crd | diff -u crds/lockkeeper.dev.yaml - \
	  || { echo "crds/ is out of date: run 'make crds' and commit the result"; exit 1; }

unit:
	$(CARGO) test --locked --lib --bins

integration: tools
	$(CLUSTER)/with-cluster.sh $(CARGO) test --locked --test integration

## demo: local control plane + operator + a sample release through the runbook
demo: tools
	e2e/demo.sh

## cluster-up / cluster-down: a local control plane for kubectl and experiments
cluster-up: tools
	$(CLUSTER)/up.sh

cluster-down:
	$(CLUSTER)/down.sh

## bench: benchmarks (printed figures, never asserted)
bench: tools
	$(CLUSTER)/with-cluster.sh $(CARGO) test --release --locked --test integration -- --ignored --nocapture --test-threads 1 bench_

clean:
	-$(CLUSTER)/down.sh
	$(CARGO) clean
