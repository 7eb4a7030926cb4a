"""Instrumentation beyond what django-prometheus and ``chat.metrics`` count.

* HTTP: django-prometheus's own middlewares count requests (settings).
* One structured log line per request (:func:`request_finished`, called by
  perf.middleware, logger ``perf.request``) with the request's database and
  cache totals.
* Database: slow statements (:class:`SlowQueryCountingHandler` on
  ``perf.slow_query``) and the connection pool (:func:`sample_once`).
* Business: active users (:func:`user_seen`, :func:`active_users_count`).
* Processes: resources, GC pauses and event-loop lag (:mod:`perf.process`).

Multiprocess mode: when ``PROMETHEUS_MULTIPROC_DIR`` is in the environment of
every server process (scripts/serve.sh puts it there), prometheus_client keeps
each process's values in memory-mapped files in that directory and the
exporter (``manage.py serve_metrics``, :mod:`perf.exporter`) adds them up.
Gauges here are ``livesum``: the sum over the processes that are alive.

Nothing here does I/O on the request path: the pool is read and active users
are written to Redis by one background thread per process, every
``SAMPLE_INTERVAL`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Metric
from prometheus_client import multiprocess

from chatsite import env
from perf import context, process

request_logger = logging.getLogger("perf.request")
logger = logging.getLogger(__name__)

SAMPLE_INTERVAL = 5.0  # seconds between pool samples and active-user flushes
ACTIVE_USERS_WINDOW = 300  # a user is active for this many seconds after a request or frame

DB_SLOW_QUERIES = Counter("chat_db_slow_queries_total", "Statements slower than SLOW_QUERY_THRESHOLD.")
DB_POOL_SIZE = Gauge(
    "chat_db_pool_size", "Connections open in the pool (idle and in use).", ["alias"], multiprocess_mode="livesum"
)
DB_POOL_MAX = Gauge("chat_db_pool_max_size", "Most connections the pool may open.", ["alias"], multiprocess_mode="livesum")
DB_POOL_IN_USE = Gauge(
    "chat_db_pool_in_use", "Connections checked out of the pool (or being opened).", ["alias"], multiprocess_mode="livesum"
)
DB_POOL_WAITING = Gauge(
    "chat_db_pool_waiting", "Requests waiting for a connection from the pool.", ["alias"], multiprocess_mode="livesum"
)
DB_POOL_ERRORS = Counter(
    "chat_db_pool_errors_total", "Pool requests that failed (timed out waiting for a connection).", ["alias"]
)


def metric_name(*parts: str) -> str:
    """The one way to name a Redis key of the metrics machinery."""
    return ":".join(["chat", "metrics", *parts])


def metrics_enabled() -> bool:
    return bool(getattr(settings, "METRICS_ENABLED", False))


# --- per-request cache totals ------------------------------------------------------


@dataclass
class CacheTotals:
    """Cache lookups of one request (perf.cache counts each key as a hit or a miss)."""

    hits: int = 0
    misses: int = 0


_cache_totals: ContextVar[CacheTotals | None] = ContextVar("perf_cache_totals", default=None)


def record_cache(hits: int, misses: int) -> None:
    """Called by perf.cache for every counted lookup; adds to the current request's totals."""
    totals = _cache_totals.get()
    if totals is not None:
        totals.hits += hits
        totals.misses += misses


# --- the request log ---------------------------------------------------------------


def loaded_user_id(request: Any) -> int | None:
    """The authenticated user's id if something already loaded the user; never a query."""
    auth = request.__dict__.get("auth")  # django-ninja: what the authenticator returned
    if getattr(auth, "pk", None) is not None:
        return auth.pk
    for attr in ("_cached_user", "_acached_user"):
        user = request.__dict__.get(attr)
        if user is not None:
            return user.pk if getattr(user, "is_authenticated", False) else None
    user = request.__dict__.get("user")
    if user is not None and not hasattr(user, "_wrapped") and getattr(user, "is_authenticated", False):
        return user.pk
    return None


def start_cache_totals() -> Any:
    """Open the current request's cache totals (perf.middleware); :func:`stop_cache_totals` closes them."""
    return _cache_totals.set(CacheTotals())


def stop_cache_totals(token: Any) -> None:
    _cache_totals.reset(token)


def request_finished(request: Any, response: Any, elapsed: float) -> None:
    """The end of a request: its user is active, and its request log line is written."""
    if _sampler is None:
        start_sampler()
    user_id = loaded_user_id(request)
    if user_id is not None:
        user_seen(user_id)
    if request_logger.isEnabledFor(logging.INFO):
        request_logger.info(request_log_line(request, response, elapsed, user_id))


def request_log_line(request: Any, response: Any, elapsed: float, user_id: int | None) -> str:
    db = context.current_totals()
    cache = _cache_totals.get()
    match = getattr(request, "resolver_match", None)
    return request_log_record(
        method=request.method,
        path=request.path,
        status=response.status_code,
        elapsed=elapsed,
        db_queries=db.queries if db else 0,
        db_ms=db.ms if db else 0.0,
        cache_hits=cache.hits if cache else 0,
        cache_misses=cache.misses if cache else 0,
        user_id=user_id,
        view=match.view_name if match is not None else None,
        request_id=getattr(request, "request_id", None),
    )


def request_log_record(
    *,
    method: str,
    path: str,
    status: int,
    elapsed: float,
    db_queries: int,
    db_ms: float,
    cache_hits: int,
    cache_misses: int,
    user_id: int | None,
    view: str | None,
    request_id: str | None,
) -> str:
    """The request log's JSON line."""
    record = {
        "event": "request",
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round(elapsed * 1000.0, 2),
        "db_queries": db_queries,
        "db_ms": round(db_ms, 2),
        "cache_hits": cache_hits,
        "cache_misses": cache_misses,
        "user_id": user_id,
        "view": view,
        "request_id": request_id,
    }
    return orjson.dumps(record).decode()


# --- slow queries ------------------------------------------------------------------


class SlowQueryCountingHandler(logging.Handler):
    """Counts the lines perf.db logs on ``perf.slow_query`` (one per slow statement)."""

    def emit(self, record: logging.LogRecord) -> None:
        DB_SLOW_QUERIES.inc()


# --- active users and the background sampler -----------------------------------------

_seen: dict[int, float] = {}
_seen_lock = threading.Lock()
# Without Redis (the embedded default) the process keeps the window itself.
_local_active: dict[int, float] = {}
_sampler: threading.Thread | None = None
_sampler_lock = threading.Lock()
_pool_errors_seen: dict[str, int] = {}


def user_seen(user_id: int) -> None:
    """Mark a user active now. A dict write: the flush to Redis happens in the sampler."""
    if not metrics_enabled():
        return
    _seen[user_id] = time.time()
    if _sampler is None:
        start_sampler()


def active_users_key() -> str:
    return metric_name("active_users")


def _redis() -> Any:
    from perf.redis import sync_client

    return sync_client()


def flush_seen(now: float | None = None) -> int:
    """Write the users seen since the last flush; returns how many."""
    with _seen_lock:
        batch = dict(_seen)
        _seen.clear()
    if not batch:
        return 0
    now = time.time() if now is None else now
    client = _redis()
    if client is None:
        _local_active.update(batch)
        for user_id in [u for u, t in _local_active.items() if t < now - ACTIVE_USERS_WINDOW]:
            _local_active.pop(user_id, None)
        return len(batch)
    key = active_users_key()
    try:
        pipe = client.pipeline(transaction=False)
        pipe.zadd(key, {str(user_id): seen for user_id, seen in batch.items()})
        pipe.zremrangebyscore(key, "-inf", now - ACTIVE_USERS_WINDOW)
        pipe.expire(key, ACTIVE_USERS_WINDOW * 2)
        pipe.execute()
    except Exception:  # noqa: BLE001 - a metric must never break anything
        logger.warning("active users flush failed", exc_info=True)
    return len(batch)


def active_users_count(window: int = ACTIVE_USERS_WINDOW) -> int | None:
    """Distinct users with a request or WebSocket frame in the last ``window`` seconds.

    Shared by every process through Redis; without Redis, this process only.
    None when Redis cannot be read.
    """
    since = time.time() - window
    client = _redis()
    if client is None:
        return sum(1 for seen in _local_active.values() if seen >= since)
    try:
        return int(client.zcount(active_users_key(), since, "+inf"))
    except Exception:  # noqa: BLE001
        return None


def _open_pools() -> dict[str, Any]:
    """The pools Django has made in this process, by alias. Never creates one
    (``DatabaseWrapper.pool`` would, from this thread's possibly stale settings)."""
    try:
        from django.db.backends.postgresql.base import DatabaseWrapper
    except Exception:  # noqa: BLE001 - no psycopg: no pools
        return {}
    return dict(DatabaseWrapper._connection_pools)


def sample_pools() -> None:
    """Copy each pool's size, use and waiters into the gauges; count new pool errors."""
    for alias, pool in _open_pools().items():
        raw = pool.get_stats()
        size, available = raw.get("pool_size", 0), raw.get("pool_available", 0)
        DB_POOL_SIZE.labels(alias).set(size)
        DB_POOL_MAX.labels(alias).set(raw.get("pool_max", 0))
        DB_POOL_IN_USE.labels(alias).set(max(0, size - available))
        DB_POOL_WAITING.labels(alias).set(raw.get("requests_waiting", 0))
        errors = raw.get("requests_errors", 0)
        new = errors - _pool_errors_seen.get(alias, 0)
        # The child exists from the first sample, at zero: a pool that never failed still has a series.
        counter = DB_POOL_ERRORS.labels(alias)
        if new > 0:
            counter.inc(new)
        _pool_errors_seen[alias] = errors


def sample_once() -> None:
    try:
        sample_pools()
    except Exception:  # noqa: BLE001
        logger.warning("pool sample failed", exc_info=True)
    process.sample(SAMPLE_INTERVAL)
    flush_seen()


def _sample_forever() -> None:
    while True:
        time.sleep(SAMPLE_INTERVAL)
        sample_once()


def start_sampler() -> None:
    """Start this process's sampler thread once (daemon: it dies with the process)."""
    global _sampler
    if _sampler is not None or not metrics_enabled():
        return
    with _sampler_lock:
        if _sampler is None:
            thread = threading.Thread(target=_sample_forever, name="perf-metrics-sampler", daemon=True)
            thread.start()
            _sampler = thread


# --- reading the numbers back ---------------------------------------------------------


def collect() -> list[Metric]:
    """Every metric family, summed over all server processes in multiprocess mode.

    Without a multiprocess directory these are this process's own numbers.
    """
    if env.PROMETHEUS_MULTIPROC_DIR:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=env.PROMETHEUS_MULTIPROC_DIR)
        return list(registry.collect())
    return list(REGISTRY.collect())
