#!/usr/bin/env bash
# Regenerates Sources/GranaryWire/Generated from Protos/*.proto.
# Needs protoc (apt-get install protobuf-compiler) and protoc-gen-swift from
# swift-protobuf 1.39.0, built once by hand (CI never builds it):
#   git clone https://github.com/apple/swift-protobuf && cd swift-protobuf && git checkout 1.39.0
#   swift build -c release --product protoc-gen-swift
# then run this script with PROTOC_GEN_SWIFT pointing at the built plugin.
set -euo pipefail
cd "$(dirname "$0")/.."
plugin=${PROTOC_GEN_SWIFT:-/tmp/swift-protobuf/.build/release/protoc-gen-swift}
mkdir -p Sources/GranaryWire/Generated
protoc --plugin=protoc-gen-swift="$plugin" \
  --swift_opt=Visibility=Public \
  --swift_out=Sources/GranaryWire/Generated \
  -I Protos Protos/*.proto
