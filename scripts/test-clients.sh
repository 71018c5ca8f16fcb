#!/usr/bin/env bash
# The client helpers' own tests, against a real redis-server with the
# freshly built module: clients/python (pytest, in target/client-venv) and
# clients/node (node --test; needs Node.js 20+: node and npm are installed
# with apt-get when missing, and the Node tests are skipped, saying so, when
# the node found is older). RECSYS_REDIS_SERVER picks the server, as for cargo test.
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
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  # Debian 12's own nodejs is 18; node-redis 6 needs 20 (nodesource or nvm).
  echo "SKIPPED clients/node tests: Node.js $node_major found, node-redis 6 needs Node.js 20 or later"
else
  (cd clients/node && npm ci --no-audit --no-fund --loglevel=error && npm test)
fi
