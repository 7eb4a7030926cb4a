"""Database work from async code, in parallel.

Channels' ``database_sync_to_async`` runs every call of a process on one
shared thread, so one slow commit holds up every socket's send. Consumers use
:func:`db_async` instead: the same connection hygiene (close old connections
before and after, so pooled connections go back to the pool), but on a pool
of ``CHAT_DB_THREADS`` threads, so sends from different sockets overlap.
"""

from __future__ import annotations

import asyncio
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from channels.db import DatabaseSyncToAsync
from django.conf import settings
from django.db import connections

_executor: ThreadPoolExecutor | None = None


def db_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=settings.CHAT_DB_THREADS, thread_name_prefix="chat-db")
    return _executor


def _release_connections() -> None:
    """Return this thread's connections to the pool (or drop broken ones).

    ``close_old_connections`` (which DatabaseSyncToAsync also runs) only sees
    connections registered in the calling asgiref context; a worker thread
    serves many contexts and can be left holding a connection none of them
    sees, checked out of the pool for good and never health-checked again
    (after a PostgreSQL restart it would fail every call on that thread).
    Closing the wrappers the call actually uses, before and after, prevents it.
    """
    for alias in connections:
        conn = connections[alias]
        if conn.connection is not None and not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


def db_async(func: Callable[..., Any]) -> Callable[..., Any]:
    """Like ``database_sync_to_async(func)``, on the consumer database thread pool."""

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        _release_connections()
        try:
            return func(*args, **kwargs)
        finally:
            _release_connections()

    return DatabaseSyncToAsync(run, thread_sensitive=False, executor=db_executor())


# --- Direct async writes (PostgreSQL) ----------------------------------------------
#
# The WebSocket send path is one INSERT that does not need the ORM: it runs on
# the event loop over a small psycopg AsyncConnectionPool (one per loop), in
# autocommit, with no thread hop and no pool health-check query per call.
# Everything else keeps Django's pool through db_async.

_pools: dict[asyncio.AbstractEventLoop, Any] = {}
_CONN_PARAMS_SKIPPED = {"cursor_factory", "context", "prepare_threshold"}


def direct_writes_enabled() -> bool:
    """True when the send path may use :func:`apool` (PostgreSQL, and CHAT_WS_DIRECT_WRITES on)."""
    return settings.CHAT_WS_DIRECT_WRITES and connections["default"].vendor == "postgresql"


async def apool() -> Any:
    """This event loop's psycopg ``AsyncConnectionPool`` on the default database, opened on first use.

    Sized by CHAT_WS_DIRECT_POOL (``WS_DIRECT_POOL``); connections live at most
    ``DB_POOL_RECYCLE`` seconds like Django's pool. Broken connections are
    dropped when returned, so a PostgreSQL restart costs the calls in flight
    (an error frame, the client retries), not the connections after it.
    """
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        from psycopg_pool import AsyncConnectionPool

        for old in [other for other in _pools if other.is_closed()]:
            del _pools[old]
        db = connections["default"]
        params = {k: v for k, v in db.get_connection_params().items() if k not in _CONN_PARAMS_SKIPPED}
        pool_options = db.settings_dict.get("OPTIONS", {}).get("pool")
        if not isinstance(pool_options, dict):  # Django also accepts pool=True
            pool_options = {}
        pool = _pools[loop] = AsyncConnectionPool(
            kwargs={**params, "autocommit": True},
            min_size=1,
            max_size=settings.CHAT_WS_DIRECT_POOL,
            timeout=pool_options.get("timeout", 30),
            max_lifetime=pool_options.get("max_lifetime", 3600),
            name="chat-ws-direct",
            open=False,
        )
        await pool.open()
    return pool


async def aclose_pool() -> None:
    """Close this event loop's direct pool, if it has one (shutdown; tests between event loops)."""
    pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.close(timeout=1.0)


async def aexecute(sql: str, params: Any) -> list[tuple]:
    """Run one statement on :func:`apool` and return its rows; timed into the slow-query log."""
    from perf.db import record_statement

    pool = await apool()
    start = time.perf_counter()
    failed = False
    try:
        async with pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall() if cursor.description else []
    except BaseException:
        failed = True
        raise
    finally:
        record_statement(time.perf_counter() - start, sql, alias="default", failed=failed)
