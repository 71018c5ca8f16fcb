#!/usr/bin/env bash
# The GPU check of the native DLRM: CPU/GPU parity and throughput by batch
# size, in one run on a lent GPU machine (the `device` tool: CUDA 13, no Rust).
#
#   here:   scripts/gpu-check.sh build
#           (builds target/gpu-check-bin/recsys, stripped, x86-64)
#   there:  device run, carry ["target/gpu-check-bin"], command
#           "scripts/gpu-check.sh run", timeout_s 300
#
# `run` finds libcublas / libnvrtc (the NVIDIA pip wheels or a CUDA toolkit),
# then runs `recsys bench rank --gpu on`: `on` fails unless the GPU path
# starts, and the table has a "max abs diff CPU vs GPU" column. Then the same
# with the module in a carried redis-server (GPU on): RECOMMEND ... RANK
# through Redis. The output is also written to $OUT/gpu-check.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  build)
    cargo build --profile gpu-check -p recsys-cli -p recsys-module
    mkdir -p target/gpu-check-bin
    cp target/gpu-check/recsys target/gpu-check/librecsys.so target/gpu-check-bin/
    # redis-server and redis-benchmark from this machine (Debian 12), with
    # the two libraries a GPU image is least likely to have.
    cp "$(command -v redis-server)" "$(command -v redis-benchmark)" target/gpu-check-bin/
    for lib in liblzf.so.1 libjemalloc.so.2; do
      cp "$(ldconfig -p | awk -v l="$lib" '$1 == l { print $NF; exit }')" target/gpu-check-bin/
    done
    ls -la target/gpu-check-bin
    ;;
  run)
    roots=(/usr /opt /lib /root)
    dirs=$( (find "${roots[@]}" -xdev \( -name 'libcublas.so*' -o -name 'libnvrtc.so*' -o -name 'libcuda.so*' \) 2>/dev/null || true) | xargs -r -n1 dirname | sort -u | tr '\n' ':')
    export LD_LIBRARY_PATH="${dirs}${LD_LIBRARY_PATH:-}"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    out="${OUT:-/tmp}/gpu-check.txt"
    target/gpu-check-bin/recsys bench rank --gpu on --redis false --calls 3000 \
      --batches 1,64,1024,131072 2>&1 | tee "$out"
    # Then the module itself with GPU on: RECOMMEND ... RANK through a
    # redis-server started by the bench (carried binaries).
    bin="$(pwd)/target/gpu-check-bin"
    if PATH="$bin:$PATH" LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$bin" redis-server --version; then
      PATH="$bin:$PATH" LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$bin" RECSYS_MODULE="$bin/librecsys.so" \
        target/gpu-check-bin/recsys bench rank --gpu on --calls 100 --batches 200 \
        --items "${ITEMS:-30000}" --users "${USERS:-5000}" --requests "${REQUESTS:-30000}" \
        --repeats 1 2>&1 | tee -a "$out"
    fi
    ;;
  *)
    echo "usage: scripts/gpu-check.sh build|run" >&2
    exit 2
    ;;
esac
