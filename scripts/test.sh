#!/usr/bin/env bash
# The README's test command: sets up what is missing (scripts/setup.sh:
# system packages, plugins, ONNX Runtime, the release build), then runs
# every test: unit tests, then integration tests that start real
# redis-server processes with the freshly built module (Debian's Redis 7.0),
# the integration tests again on Redis 7.4 (scripts/redis74.sh), and the
# Python and Node client helpers' tests (scripts/test-clients.sh).
# Arguments go to both cargo test runs (e.g. a test name filter); both use
# --workspace, so the second reuses the first one's build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --release --workspace "$@"
redis74=$(scripts/redis74.sh)
echo "== integration tests on $("$redis74" --version)"
RECSYS_REDIS_SERVER="$redis74" cargo test --release --workspace --test '*' "$@"
scripts/test-clients.sh
