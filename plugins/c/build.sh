#!/usr/bin/env bash
# Builds the C example plugins with Debian's clang + lld (--target=wasm32, no
# libc: mini_libc.c), `wit-bindgen c` and `wasm-tools component new`
# (cargo install wit-bindgen-cli wasm-tools). Skipped with a notice when a tool
# is missing.
set -euo pipefail
cd "$(dirname "$0")"
PATH="$HOME/.cargo/bin:$PATH"
for tool in clang wasm-ld wit-bindgen wasm-tools; do
  if ! command -v "$tool" >/dev/null; then
    echo "plugins/c: '$tool' not found: using the committed build in plugins/prebuilt/" >&2
    cp ../prebuilt/*.wasm ../dist/
    exit 0
  fi
done
out=../dist
for p in min-score; do
  gen=$(mktemp -d)
  wit-bindgen c ../../wit --world filter --out-dir "$gen" >/dev/null
  clang --target=wasm32 -O2 -nostdlib -ffreestanding -Iinclude -I"$gen" \
    -Wl,--no-entry -Wl,--export-dynamic -Wl,--strip-all \
    -o "$gen/$p.core.wasm" "$gen/filter.c" "$gen/filter_component_type.o" "$p/plugin.c" mini_libc.c
  wasm-tools component new "$gen/$p.core.wasm" -o "$out/$p.wasm"
  cp "$out/$p.wasm" "../prebuilt/$p.wasm"
  rm -rf "$gen"
done
