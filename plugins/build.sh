#!/usr/bin/env bash
# Builds the example plugins into WebAssembly components in plugins/dist/.
# Rust: wasm32-wasip2 (rustc links a component directly).
set -euo pipefail
cd "$(dirname "$0")"
rustup target list --installed 2>/dev/null | grep -q '^wasm32-wasip2$' || rustup target add wasm32-wasip2
mkdir -p dist
(cd rust && cargo build --release --target wasm32-wasip2 --quiet)
for p in exclude-attr max-per-category boost-sponsored hostile forbidden-import; do
  cp "rust/target/wasm32-wasip2/release/${p//-/_}.wasm" "dist/$p.wasm"
done
if [ -x c/build.sh ]; then c/build.sh; fi
ls -l dist
