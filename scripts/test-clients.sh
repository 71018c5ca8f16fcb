#!/usr/bin/env bash
# The client helpers' own tests, against a real redis-server with the
# freshly built module: clients/python (pytest, in target/client-venv) and
# clients/node (node --test; needs Node.js 20+, installed with apt-get
# when missing). RECSYS_REDIS_SERVER picks the server, as for cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/client-venv
if [ ! -x "$venv/bin/pytest" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "redis>=5" numpy pytest pytest-asyncio
fi
(cd clients/python && "../../$venv/bin/python" -m pytest -q tests)
if ! command -v npm >/dev/null; then
  echo "installing nodejs and npm (apt-get)..."
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q nodejs npm
fi
(cd clients/node && npm ci --no-audit --no-fund --loglevel=error && npm test)
