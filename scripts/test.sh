#!/usr/bin/env bash
# Runs every test: unit tests of the core crate, then integration tests that
# start a real redis-server with the freshly built module.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace
cargo test --release --workspace "$@"
