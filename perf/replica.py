"""Reads a streaming standby may answer (``DATABASE_REPLICA_URL``), and the router that sends them there.

Only reads inside :func:`may_lag` ever go to the replica: the selectors of
history pages and room lists wear it. Everything else, writes, access checks,
resume and gap fill on sockets, reads inside a transaction, stays on the
primary (``default``).

A block of such reads goes to the replica only when the standby has replayed
everything the primary had committed when the block's first query ran: the
primary's WAL insert position at that moment (the fence) against the
standby's replay position. So a read from the replica sees every write that
finished before it, the reader's own included (read your writes, for a
request and for a socket alike, whichever server process wrote), and what it
puts in the cache is what a read from the primary would have put there. A
bounded staleness ("at most N seconds behind") would not do here: these reads
fill shared caches (rendered pages, access, room lists), and a stale fill
outlives the lag, for everyone, until its entry is invalidated again.

The fence costs two trivial statements, one on each server, per block that
reaches the database; a block answered from the cache asks neither.

The block runs on the primary instead when the standby is behind the fence,
is not a standby (promoted), or fails (no connection within
``DATABASE_REPLICA_TIMEOUT``, a query error, a query cancelled by replay):
then it runs again, whole, on the primary, and the replica is left alone for
``DATABASE_REPLICA_RETRY`` seconds. Without ``DATABASE_REPLICA_URL`` there is
no router and :func:`may_lag` only calls the function.
"""

from __future__ import annotations

import functools
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from prometheus_client import Counter

logger = logging.getLogger(__name__)

REPLICA = "replica"

F = TypeVar("F", bound=Callable[..., Any])

REPLICA_BLOCKS = Counter(
    "chat_db_replica_blocks_total",
    "Blocks of reads that may be served by the replica, by the server that answered them and why.",
    ["server", "reason"],
)


@dataclass
class _Block:
    """One :func:`may_lag` call: the alias its reads go to, chosen at its first query."""

    alias: str | None = None


_block: ContextVar[_Block | None] = ContextVar("perf_replica_block", default=None)
# time.monotonic() before which the replica is not asked (it failed); one float, written whole.
_skip_until = 0.0


def configured() -> bool:
    """True when DATABASE_REPLICA_URL is set (settings define the ``replica`` alias)."""
    return REPLICA in settings.DATABASES


def may_lag(fn: F) -> F:
    """Let the reads of ``fn`` be served by the replica when it has caught up (see the module's docstring).

    ``fn`` must not write to the database: when the replica fails part-way,
    ``fn`` runs again on the primary. Nested calls join the outermost block.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _block.get() is not None or not configured():
            return fn(*args, **kwargs)
        block = _Block()
        token = _block.set(block)
        try:
            try:
                return fn(*args, **kwargs)
            except DatabaseError as exc:
                if block.alias != REPLICA:
                    raise
                _give_up_on_replica(f"a read failed, read again from the primary: {exc}")
            REPLICA_BLOCKS.labels("primary", "failed").inc()
            block.alias = DEFAULT_DB_ALIAS
            return fn(*args, **kwargs)
        finally:
            _block.reset(token)

    return wrapper  # type: ignore[return-value]


def current_alias() -> str | None:
    """The alias the current :func:`may_lag` block reads from, None before its first query or outside one."""
    block = _block.get()
    return None if block is None else block.alias


def _give_up_on_replica(why: str) -> None:
    """Skip the replica for DATABASE_REPLICA_RETRY seconds and drop this thread's connection to it."""
    global _skip_until
    _skip_until = time.monotonic() + float(getattr(settings, "DATABASE_REPLICA_RETRY", 5.0))
    try:
        connections[REPLICA].close()
    except Exception:  # noqa: BLE001 - a broken connection is dropped either way
        pass
    logger.warning("replica skipped for %.0f s: %s", _skip_until - time.monotonic(), why)


def _choose() -> tuple[str, str]:
    """(alias, reason) for a block's reads: the replica only when it has replayed up to the primary's position now."""
    if time.monotonic() < _skip_until:
        return DEFAULT_DB_ALIAS, "skipped"
    primary = connections[DEFAULT_DB_ALIAS]
    if primary.in_atomic_block:
        # The transaction's own writes exist on the primary only.
        return DEFAULT_DB_ALIAS, "transaction"
    with primary.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_insert_lsn()")
        (fence,) = cursor.fetchone()
    try:
        with connections[REPLICA].cursor() as cursor:
            cursor.execute("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() >= %s::pg_lsn", [fence])
            standby, caught_up = cursor.fetchone()
    except DatabaseError as exc:
        _give_up_on_replica(f"fence check failed: {exc}")
        return DEFAULT_DB_ALIAS, "failed"
    if not standby:
        _give_up_on_replica("not a standby (promoted?): its data may have left the primary's")
        return DEFAULT_DB_ALIAS, "not_standby"
    if not caught_up:
        return DEFAULT_DB_ALIAS, "behind"
    return REPLICA, "caught_up"


class ReplicaRouter:
    """Django's database router (``DATABASE_ROUTERS``, set only with DATABASE_REPLICA_URL).

    Outside a :func:`may_lag` block it names the primary explicitly, for
    writes too: left to Django, an object read from the replica would carry
    its reads and saves back there.
    """

    def db_for_read(self, model: Any, **hints: Any) -> str:
        block = _block.get()
        if block is None:
            return DEFAULT_DB_ALIAS
        if block.alias is None:
            block.alias, reason = _choose()
            REPLICA_BLOCKS.labels("replica" if block.alias == REPLICA else "primary", reason).inc()
        return block.alias

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        # Both aliases hold the same rows.
        return True

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool | None:
        # A physical standby replays the primary's migrations; it cannot run its own.
        return False if db == REPLICA else None
