#!/usr/bin/env bash
# Serve the app with daphne (heartbeats on) and, when Redis is configured,
# the background worker beside it. Stops both on Ctrl-C.
set -euo pipefail
PY=${PY:-.venv/bin/python}
PORT=${PORT:-8000}
HOST=${HOST:-127.0.0.1}
PING_INTERVAL=${WS_PING_INTERVAL:-20}
PING_TIMEOUT=${WS_PING_TIMEOUT:-30}

worker_pid=""
cleanup() { [ -n "$worker_pid" ] && kill "$worker_pid" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

if [ -n "${REDIS_URL:-}" ]; then
  "$PY" manage.py chat_worker &
  worker_pid=$!
else
  echo "REDIS_URL is not set: embedded mode (in-memory channel layer, no background worker; @mention notifications need Redis)."
fi

"$PY" -m daphne -b "$HOST" -p "$PORT" --ping-interval "$PING_INTERVAL" --ping-timeout "$PING_TIMEOUT" \
  --websocket-max-message-size 1048576 --websocket-max-frame-size 1048576 chatsite.asgi:application
