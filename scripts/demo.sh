#!/usr/bin/env bash
# The README's demo command: sets up what is missing (scripts/setup.sh),
# then runs `recsys demo` with the arguments given (--movielens DIR,
# --once, ...; see `target/release/recsys demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec target/release/recsys demo "$@"
