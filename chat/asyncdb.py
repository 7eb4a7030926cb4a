"""Database work from async code, in parallel.

Channels' ``database_sync_to_async`` runs every call of a process on one
shared thread, so one slow commit holds up every socket's send. Consumers use
:func:`db_async` instead: the same connection hygiene (close old connections
before and after, so pooled connections go back to the pool), but on a pool
of ``CHAT_DB_THREADS`` threads, so sends from different sockets overlap.
"""

from __future__ import annotations

import functools
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
