#!/usr/bin/env bash
# Runs every test: unit tests of the core crate, then integration tests that
# start a real redis-server with the freshly built module. The example and
# hostile plugins are built first (they need the wasm32-wasip2 target).
set -euo pipefail
cd "$(dirname "$0")/.."
plugins/build.sh
cargo build --release --workspace
cargo test --release --workspace "$@"
