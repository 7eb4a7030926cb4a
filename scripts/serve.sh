#!/usr/bin/env bash
# Collect the static files if the production storage has no manifest yet (manage.py collectstatic_if_missing),
# then serve the app with uvicorn (chatsite.server; ASGI_SERVER=daphne for daphne; heartbeats on) and beside it, when Redis is
# configured, the background worker, and, unless ENABLE_METRICS=false, the
# metrics exporter (manage.py serve_metrics on METRICS_BIND:METRICS_PORT).
# Stops them all when the server stops, on Ctrl-C or on SIGTERM.
set -euo pipefail
PY=${PY:-.venv/bin/python}
PORT=${PORT:-8000}
HOST=${HOST:-127.0.0.1}
PING_INTERVAL=${WS_PING_INTERVAL:-20}
PING_TIMEOUT=${WS_PING_TIMEOUT:-30}
# SERVE_WORKER=false when the background worker runs elsewhere (docker-compose.yml's worker service).
SERVE_WORKER=${SERVE_WORKER:-true}

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

enabled() {  # the same reading as chatsite.env.env_bool: empty means the default
  case "$(printf '%s' "${1:-$2}" | tr '[:upper:]' '[:lower:]')" in
    1|true|yes|on) return 0 ;;
    *) return 1 ;;
  esac
}

# The production storage names every asset from collectstatic's manifest: without it every page is a 500.
# Collecting here (a no-op in the image, which collects at build time) lets the documented start work
# on a fresh checkout; a STATIC_ROOT this user cannot write stops the start with one line saying what to run.
"$PY" manage.py collectstatic_if_missing

if enabled "${ENABLE_METRICS:-}" true; then
  # Every process of this stack writes its metrics to one directory
  # (prometheus_client multiprocess mode); it is emptied here, once, before
  # any of them starts, and must be in their environment from the start.
  export PROMETHEUS_MULTIPROC_DIR=${PROMETHEUS_MULTIPROC_DIR:-${TMPDIR:-/tmp}/chat-metrics-$PORT}
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
  find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -type f -delete
  "$PY" manage.py serve_metrics &
  pids+=($!)
else
  unset PROMETHEUS_MULTIPROC_DIR
fi

if [ -n "${REDIS_URL:-}" ] && enabled "$SERVE_WORKER" true; then
  "$PY" manage.py chat_worker &
  pids+=($!)
elif [ -z "${REDIS_URL:-}" ]; then
  echo "REDIS_URL is not set: embedded mode (in-memory channel layer, no background worker; @mention notifications need Redis)."
fi

"$PY" -m chatsite.server -b "$HOST" -p "$PORT" --ping-interval "$PING_INTERVAL" --ping-timeout "$PING_TIMEOUT" \
  --max-message-size 1048576 chatsite.asgi:application &
server_pid=$!
pids+=("$server_pid")
wait "$server_pid"
