"""The slow-query log, per-request query totals, and connection pool statistics.

``install_query_wrapper`` runs on ``connection_created`` for every database
connection in every thread (HTTP requests, consumers' database threads,
management commands, workers). With the psycopg pool, Django opens a
connection from the pool at the first query of each request and gives it back
at the end, so the signal fires once per checkout: the wrapper is added to a
``DatabaseWrapper`` once and stays there.

Whose clock says a statement is slow
------------------------------------

The wrapper's wall-clock time is what the caller waited, not what the
database spent: statements run in worker threads, and a thread whose result
has arrived still waits for the GIL (held by the event loop or another
thread) before it can read it. Measured (docs/MONITORING.md, "The
slow-query log"): a ``SELECT 1`` that PostgreSQL ran in 0.07 ms took 150 to
300 ms of wall time while another thread held the GIL in one C call, and the
thread's own CPU time (``time.thread_time``) cannot tell the two apart: it
was about 1 ms both for that statement and for a ``pg_sleep(0.2)``.

So PostgreSQL times the statements itself. On each new PostgreSQL
connection (:func:`enable_server_timing`) the session is given
``log_min_duration_statement`` = the threshold and ``client_min_messages =
log``: the server then sends, for every statement at least that slow and only
for those, the ``LOG: duration: … ms`` message it writes to its own log, and
:class:`ServerClock` reads the number from it while the statement is being
executed. A statement slow by the wall clock is logged only when PostgreSQL
also reports it (``"measured": "database"``); otherwise it was fast on the
database and is only counted (``chat_db_statements_delayed_total``).
Fast statements cost nothing more: the server sends nothing for them.

Setting ``log_min_duration_statement`` needs a superuser or, on PostgreSQL
15+, ``GRANT SET ON PARAMETER log_min_duration_statement TO <role>``. Without
it, and for what PostgreSQL does not time (a statement that failed,
``executemany``), statements are judged by the wall clock as before
(``"measured": "wall"``).
"""

from __future__ import annotations

import logging
import re
import select
import time
from typing import Any, Callable

import orjson
import psycopg
from django.conf import settings
from django.db import connections
from prometheus_client import Counter

from perf import context

logger = logging.getLogger("perf.slow_query")
setup_logger = logging.getLogger(__name__)

DB_STATEMENTS_DELAYED = Counter(
    "chat_db_statements_delayed_total",
    "Statements over SLOW_QUERY_THRESHOLD by this process's clock that PostgreSQL ran in less: not logged as slow.",
)

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
    wrapper = context_["connection"]
    clock: ServerClock | None = getattr(wrapper.connection, SERVER_CLOCK_ATTR, None)
    if clock is not None:
        clock.reset()
    start = time.perf_counter()
    failed = False
    try:
        return execute(sql, params, many, context_)
    except BaseException:
        failed = True
        raise
    finally:
        elapsed = time.perf_counter() - start
        if clock is None or many or failed:
            record_statement(elapsed, sql, alias=wrapper.alias, many=many, failed=failed)
        else:
            record_statement(elapsed, sql, alias=wrapper.alias, db_ms=clock.reported_ms, db_floor_ms=clock.threshold_ms)


def record_statement(
    elapsed: float,
    sql: str,
    *,
    alias: str,
    many: bool = False,
    failed: bool = False,
    db_ms: float | None = None,
    db_floor_ms: int | None = None,
) -> None:
    """Count one statement for the request and log it when slow.

    ``elapsed`` is the wall-clock time around the call (seconds). ``db_ms`` is
    what PostgreSQL reported for it (0.0: nothing, so it ran in less than
    ``db_floor_ms``, the session's ``log_min_duration_statement``); None when
    PostgreSQL did not time it. Every statement comes here through
    :func:`slow_query_wrapper`, installed on every connection.
    """
    context.record_query(elapsed)
    threshold = getattr(settings, "SLOW_QUERY_THRESHOLD", DEFAULT_THRESHOLD)
    if elapsed < threshold:  # the database's time is within the wall time: fast either way
        return
    if db_ms is None or db_floor_ms is None or db_floor_ms > threshold * 1000.0:
        _log_slow(elapsed, "wall", elapsed, sql, alias, many, failed)
    elif db_ms >= threshold * 1000.0:
        _log_slow(db_ms / 1000.0, "database", elapsed, sql, alias, many, failed)
    else:
        DB_STATEMENTS_DELAYED.inc()


def _log_slow(duration: float, measured: str, wall: float, sql: str, alias: str, many: bool, failed: bool) -> None:
    record: dict[str, Any] = {
        "event": "slow_query",
        "duration_ms": round(duration * 1000.0, 1),
        "measured": measured,
        "wall_ms": round(wall * 1000.0, 1),
        "db": alias,
        **context.current(),
    }
    if many:
        record["many"] = True
    if failed:
        record["failed"] = True
    record["sql"] = clean_sql(sql)
    logger.warning(orjson.dumps(record).decode(), extra={"slow_query": record})


# --- PostgreSQL's own timing --------------------------------------------------------

SERVER_CLOCK_ATTR = "_perf_server_clock"
# The first number of the message: "duration: 201.342 ms  statement: ..." (also
# "… execute <unnamed>: …", "… parse …", "… bind …"); PostgreSQL prints it with three
# decimals whatever lc_messages translates the words to.
_DURATION = re.compile(r"^\w[\w ]*?\s?[:：]\s*(\d+\.\d{3})\s")
_MAX_SETTING_MS = 2**31 - 1
# Aliases whose role may not set log_min_duration_statement: asked once per process.
_server_timing_denied: set[str] = set()


class ServerClock:
    """The durations PostgreSQL reports on one connection for the statement being executed.

    One per psycopg connection, as its notice handler. psycopg calls the
    handler in the thread that runs the statement, while it reads the reply,
    so :meth:`reset` before and :attr:`reported_ms` after bracket one statement.
    Phases timed separately (``parse``, ``bind``, ``execute``) add up.
    """

    __slots__ = ("threshold_ms", "reported_ms")

    def __init__(self, threshold_ms: int) -> None:
        self.threshold_ms = threshold_ms
        self.reported_ms = 0.0

    def reset(self) -> None:
        self.reported_ms = 0.0

    def __call__(self, diagnostic: Any) -> None:
        if diagnostic.severity_nonlocalized != "LOG":
            return
        match = _DURATION.match(diagnostic.message_primary or "")
        if match is not None:
            self.reported_ms += float(match.group(1))


def threshold_ms() -> int:
    """SLOW_QUERY_THRESHOLD as a ``log_min_duration_statement`` value (whole milliseconds, rounded down)."""
    seconds = max(0.0, float(getattr(settings, "SLOW_QUERY_THRESHOLD", DEFAULT_THRESHOLD)))
    return min(_MAX_SETTING_MS, int(seconds * 1000.0))


def enable_server_timing(wrapper: Any) -> bool:
    """Have PostgreSQL time this connection's statements over the threshold; True when it does.

    Runs at every checkout (``connection_created``), and costs a round trip
    only the first time for each PostgreSQL connection (or after
    SLOW_QUERY_THRESHOLD changed, as tests do), when the connection is idle
    in autocommit, where a refused ``SET`` harms nothing. A role that may not
    set ``log_min_duration_statement`` is asked once per process and alias;
    its statements are judged by the wall clock.
    """
    if wrapper.vendor != "postgresql" or wrapper.alias in _server_timing_denied:
        return False
    raw = wrapper.connection
    wanted = threshold_ms()
    clock: ServerClock | None = getattr(raw, SERVER_CLOCK_ATTR, None)
    if clock is not None and clock.threshold_ms == wanted:
        return True
    if not raw.autocommit or raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return clock is not None  # later, at a checkout where it is idle
    try:
        # Both or neither: a refused first SET aborts the second.
        raw.execute(f"SET log_min_duration_statement = {wanted}; SET client_min_messages = log")
    except psycopg.errors.InsufficientPrivilege:
        _server_timing_denied.add(wrapper.alias)
        setup_logger.warning(
            "database %r: this role may not set log_min_duration_statement, so slow statements are timed by the "
            "wall clock (\"measured\": \"wall\"); GRANT SET ON PARAMETER log_min_duration_statement lets PostgreSQL "
            "time them",
            wrapper.alias,
        )
        return False
    except psycopg.Error as exc:
        setup_logger.warning("database %r: could not turn on PostgreSQL's statement timing: %s", wrapper.alias, exc)
        return False
    if clock is None:
        clock = ServerClock(wanted)
        raw.add_notice_handler(clock)
        setattr(raw, SERVER_CLOCK_ATTR, clock)
    clock.threshold_ms = wanted
    return True


def install_query_wrapper(sender: Any, connection: Any, **kwargs: Any) -> None:
    """``connection_created`` receiver: put the wrapper on ``connection`` once.

    It goes first in the list, so it is the outermost wrapper, and a caller's
    ``with connection.execute_wrapper(...)`` that was active when this
    connection opened still pops its own wrapper, not this one.
    """
    if slow_query_wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, slow_query_wrapper)
    enable_server_timing(connection)
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
