#!/usr/bin/env bash
# Installs ONNX Runtime 1.31.1 (the PyPI wheel carries libonnxruntime.so)
# into target/ort-venv, where the tests, demo and benchmarks look for it.
# Prints the library path. Pass --with-onnx to add the onnx package, which
# scripts/make_onnx_fixtures.py needs.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/ort-venv
lib() { ls "$venv"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1 2>/dev/null | head -1; }
if [ -z "$(lib)" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check onnxruntime==1.31.1
fi
if [ "${1:-}" = "--with-onnx" ]; then
  "$venv/bin/pip" install -q --disable-pip-version-check onnx==1.23.2 numpy
fi
realpath "$(lib)"
