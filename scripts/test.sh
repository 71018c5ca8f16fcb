#!/usr/bin/env bash
# The README's test command: sets up what is missing (scripts/setup.sh:
# system packages, plugins, ONNX Runtime, the release build), then runs
# every test: unit tests, then integration tests that start real
# redis-server processes with the freshly built module.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --release --workspace "$@"
