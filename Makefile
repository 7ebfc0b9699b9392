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

# The test bundle is built as a product: a plain `swift test` (or
# --build-tests) would also compile swift-protobuf's C++ protoc, which
# Granary never uses (its generated code is committed), for many minutes.
# --no-parallel: tests that start networks and mounts run one at a time on
# these 2-core machines; each also has its own time limit.
# SWIFT_BACKTRACE: a crash prints only the crashed thread's frames, so they
# are the last lines of the log (CI shows the tail) and not lost in registers.
test: build
	$(SWIFT) build -c release --product GranaryPackageTests
	SWIFT_BACKTRACE=enable=yes,interactive=no,color=no,threads=crashed,registers=none,images=none \
	GRANARY_BIN=$(BIN) $(SWIFT) test -c release --skip-build --no-parallel

bench: build
	$(BIN) bench core

clean-mounts:
	@scripts/cleanup.sh
