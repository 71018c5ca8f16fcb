#!/usr/bin/env bash
# Runs every test: unit tests of the core crate, then integration tests that
# start a real redis-server with the freshly built module. The example and
# hostile plugins are built first (they need the wasm32-wasip2 target), and
# ONNX Runtime is installed from PyPI for the ONNX ranking tests.
set -euo pipefail
cd "$(dirname "$0")/.."
plugins/build.sh
# ONNX Runtime 1.31.1 from PyPI into target/ort-venv (the ranking tests load it).
scripts/ort-venv.sh
cargo build --release --workspace
cargo test --release --workspace "$@"
