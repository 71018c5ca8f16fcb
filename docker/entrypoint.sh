#!/bin/sh
# server: redis-server with the image's redis.conf; the password comes from
#   REDIS_PASSWORD (required: the port is published), never from the file.
# health: PONG from the server and the module loaded.
set -eu
case "${1:-server}" in
  server)
    : "${REDIS_PASSWORD:?set REDIS_PASSWORD (docker compose reads it from .env)}"
    shift || true
    exec redis-server /usr/local/etc/redis/redis.conf --requirepass "$REDIS_PASSWORD" --bind 0.0.0.0 "$@"
    ;;
  health)
    REDISCLI_AUTH="${REDIS_PASSWORD:-}" redis-cli -p "${REDIS_PORT:-6379}" MODULE LIST | grep -q recsys
    ;;
  *)
    exec "$@"
    ;;
esac
