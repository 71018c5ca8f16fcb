#!/usr/bin/env bash
# Everything the demo and the tests need on a fresh Debian machine that has
# only Rust (rustup) and Python 3: the system packages that are missing
# (redis-server, redis-tools, libclang for the module's bindings, clang for
# the C plugin, python3-venv), the example plugins, ONNX Runtime from PyPI
# (target/ort-venv), then the module and the `recsys` tool in release mode.
# Each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
[ -e /usr/lib/llvm-14/lib/libclang.so ] || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v clang >/dev/null || need+=(clang)
command -v python3 >/dev/null || need+=(python3)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (apt-get)..."
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
fi
plugins/build.sh >/dev/null
scripts/ort-venv.sh >/dev/null
cargo build --release --workspace
