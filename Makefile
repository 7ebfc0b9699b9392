# The README's two commands: `make up` and `make test`.
#
# Integration tests and benchmarks run the release build of `granary`
# (debug is orders of magnitude slower on hot paths). `make test` builds it
# once and runs the suite in release mode too, so the libraries compile once;
# tests find the binary through GRANARY_BIN.
SWIFT ?= swift
BIN := $(CURDIR)/.build/release/granary

.PHONY: deps build up test bench clean-mounts

deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build -c release --product granary

up: build
	$(BIN) up

# --no-parallel: tests that start networks and mounts run one at a time on
# these 2-core machines; each also has its own time limit.
test: build
	GRANARY_BIN=$(BIN) $(SWIFT) test -c release --no-parallel

bench: build
	$(BIN) bench core

clean-mounts:
	@scripts/cleanup.sh
