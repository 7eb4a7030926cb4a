"""The slow-query log, per-request query totals, and connection pool statistics.

``install_query_wrapper`` runs on ``connection_created`` for every database
connection in every thread (HTTP requests, consumers' database threads,
management commands, workers). With the psycopg pool, Django opens a
connection from the pool at the first query of each request and gives it back
at the end, so the signal fires once per checkout: the wrapper is added to a
``DatabaseWrapper`` once and stays there.
"""

from __future__ import annotations

import logging
import re
import select
import time
from typing import Any, Callable

import orjson
from django.conf import settings
from django.db import connections

from perf import context

logger = logging.getLogger("perf.slow_query")

SQL_MAX_CHARS = 2000
DEFAULT_THRESHOLD = 0.1  # seconds, when a settings module does not set SLOW_QUERY_THRESHOLD
_SPACES = re.compile(r"\s+")
# "%s, %s, %s, ..." from IN lists and bulk inserts: keep the shape, drop the length.
_PLACEHOLDER_RUN = re.compile(r"%s(?:\s*,\s*%s){3,}")


def clean_sql(sql: str) -> str:
    """The statement template for a log line: one line, long placeholder lists folded, bounded."""
    text = _SPACES.sub(" ", sql).strip()
    text = _PLACEHOLDER_RUN.sub("%s, ...", text)
    if len(text) > SQL_MAX_CHARS:
        text = text[:SQL_MAX_CHARS] + " ..."
    return text


def slow_query_wrapper(
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context_: dict[str, Any]
) -> Any:
    """Time one statement; count it for the request; log it when slow.

    The log line carries the SQL template (placeholders, never the parameters,
    which may hold message bodies or credentials).
    """
    start = time.perf_counter()
    failed = False
    try:
        return execute(sql, params, many, context_)
    except BaseException:
        failed = True
        raise
    finally:
        record_statement(time.perf_counter() - start, sql, alias=context_["connection"].alias, many=many, failed=failed)


def record_statement(elapsed: float, sql: str, *, alias: str, many: bool = False, failed: bool = False) -> None:
    """Count one statement for the request and log it when slow.

    Every statement comes here through :func:`slow_query_wrapper`, installed on every connection.
    """
    context.record_query(elapsed)
    if elapsed >= getattr(settings, "SLOW_QUERY_THRESHOLD", DEFAULT_THRESHOLD):
        _log_slow(elapsed, sql, alias, many, failed)


def _log_slow(elapsed: float, sql: str, alias: str, many: bool, failed: bool) -> None:
    record: dict[str, Any] = {
        "event": "slow_query",
        "duration_ms": round(elapsed * 1000.0, 1),
        "db": alias,
        **context.current(),
    }
    if many:
        record["many"] = True
    if failed:
        record["failed"] = True
    record["sql"] = clean_sql(sql)
    logger.warning(orjson.dumps(record).decode(), extra={"slow_query": record})


def install_query_wrapper(sender: Any, connection: Any, **kwargs: Any) -> None:
    """``connection_created`` receiver: put the wrapper on ``connection`` once.

    It goes first in the list, so it is the outermost wrapper, and a caller's
    ``with connection.execute_wrapper(...)`` that was active when this
    connection opened still pops its own wrapper, not this one.
    """
    if slow_query_wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, slow_query_wrapper)
    pool = getattr(connection, "pool", None)
    if pool is not None:
        sweep_on_failed_check(pool)


_MISSING = object()


def sweep_on_failed_check(pool: Any) -> None:
    """Make the pool's checkout check cheap, and discard *all* broken idle connections when one fails it.

    With CONN_HEALTH_CHECKS, Django builds the pool with
    ``check=ConnectionPool.check_connection``: ``getconn()`` tests each idle
    connection it takes and, when one is broken, takes the next, retrying at
    once the first time and then after an exponential backoff (1 s, 2 s, 4 s,
    ...). After a server restart or failover every idle connection is broken:
    measured here, five of them cost one request 15 s (0+1+2+4+8), and six
    exceed a 3 s pool timeout (a 503). Here a failed check first runs the pool's public
    ``check()``, which tests every idle connection at once and replaces the
    broken ones, so the immediate retry gets a new connection. And a
    connection whose socket is quiet (``_quiet``) skips the round trip.

    Django passes ``check`` itself, so it cannot come from OPTIONS; this wraps
    the pool's stored callback (a private attribute of psycopg_pool 3.2+). If
    that attribute is missing the pool is left as it is, with a warning.
    """
    if getattr(pool, "_perf_sweeps", False):
        return
    original = getattr(pool, "_check", _MISSING)
    if original is _MISSING:
        logging.getLogger(__name__).warning("psycopg_pool has no _check attribute; dead-connection sweep is off")
        pool._perf_sweeps = True
        return
    if original is None:
        pool._perf_sweeps = True
        return

    def check_and_sweep(conn: Any) -> None:
        if _quiet(conn):
            return
        try:
            original(conn)
        except Exception:
            pool.check()
            raise

    pool._check = check_and_sweep
    pool._perf_sweeps = True


def _quiet(conn: Any) -> bool:
    """True when an idle pooled connection is open and nothing has arrived on its socket.

    A backend that ends (pg_terminate_backend, a server restart or failover)
    sends its last message and closes the socket, which makes the socket
    readable; an idle connection is otherwise silent. So a quiet socket needs
    no round trip to prove itself, and anything else gets the pool's real
    check. This saves a round trip on every checkout (every request); what it
    cannot see, a peer gone without a word, a real check would only see after
    the TCP timeout too.
    """
    try:
        if conn.closed or conn.broken:
            return False
        poller = select.poll()  # not select.select: a busy server's descriptors pass 1024
        poller.register(conn.fileno(), select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


def pool_stats(alias: str = "default") -> dict[str, Any]:
    """This process's connection pool for ``alias``: size, in use, waiting, errors.

    ``enabled`` is False when the database has no pool (SQLite, or pooling
    off). ``in_use`` is ``size - available``: connections checked out, plus
    any the pool is still opening (psycopg_pool counts those in its size).
    Counters are cumulative since the pool was created.
    """
    wrapper = connections[alias]
    pool = getattr(wrapper, "pool", None)
    if pool is None:
        return {"alias": alias, "enabled": False}
    raw = pool.get_stats()
    size = raw.get("pool_size", 0)
    available = raw.get("pool_available", 0)
    return {
        "alias": alias,
        "enabled": True,
        "min_size": raw.get("pool_min", 0),
        "max_size": raw.get("pool_max", 0),
        "size": size,
        "available": available,
        "in_use": max(0, size - available),
        "waiting": raw.get("requests_waiting", 0),
        "requests": raw.get("requests_num", 0),
        "requests_queued": raw.get("requests_queued", 0),
        "requests_wait_ms": raw.get("requests_wait_ms", 0),
        "requests_errors": raw.get("requests_errors", 0),
        "connections_opened": raw.get("connections_num", 0),
        "connections_errors": raw.get("connections_errors", 0),
        "connections_lost": raw.get("connections_lost", 0),
        "returns_bad": raw.get("returns_bad", 0),
        "errors": raw.get("requests_errors", 0) + raw.get("connections_errors", 0),
        "timeout_s": pool.timeout,
    }
