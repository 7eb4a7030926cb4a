"""Database work from async code, in parallel.

Channels' ``database_sync_to_async`` runs every call of a process on one
shared thread, so one slow commit holds up every socket's send. Consumers use
:func:`db_async` instead: the same connection hygiene (close old connections
before and after, so pooled connections go back to the pool), but on a pool
of ``CHAT_DB_THREADS`` threads, so sends from different sockets overlap.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from channels.db import DatabaseSyncToAsync
from django.conf import settings

_executor: ThreadPoolExecutor | None = None


def db_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=settings.CHAT_DB_THREADS, thread_name_prefix="chat-db")
    return _executor


def db_async(func: Callable[..., Any]) -> Callable[..., Any]:
    """Like ``database_sync_to_async(func)``, on the consumer database thread pool."""
    return DatabaseSyncToAsync(func, thread_sensitive=False, executor=db_executor())
