"""Cache-aside, in one place: key building, read/fill, invalidation, counters.

Families name what is cached; each has its own hit/miss counters so the hit
rate of profiles, rooms, messages, … can be read separately (Prometheus
``chat_cache_requests_total{family,result}`` and :func:`cache_stats`).

Keys are built only by :func:`cache_key`. Writes invalidate exactly the keys
they make stale, after commit (:func:`invalidate_on_commit`); a family of keys
goes with :func:`invalidate_pattern`; TTL (``CACHE_TTL``; ``CACHE_TTL_ENTRIES``
for the families apps register with register_family) is the last resort.

Redis errors never reach the caller: django-redis is configured to ignore
them (reads become misses, writes are skipped) and logs each to
``perf.cache.redis``, where :class:`CacheErrorCountingHandler` counts it.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, TypeVar

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.dummy import DummyCache
from django.core.signals import setting_changed
from django.db import transaction
from prometheus_client import Counter

from chatsite import env
from perf.metrics import record_cache

T = TypeVar("T")
logger = logging.getLogger(__name__)

CACHE_REQUESTS = Counter("chat_cache_requests_total", "Cache lookups by family and result.", ["family", "result"])
CACHE_ERRORS = Counter("chat_cache_errors_total", "Cache operations that failed (Redis down or slow).")

# In-process mirror of the counters for the staff page and the benchmark.
_stats: dict[str, list[int]] = defaultdict(lambda: [0, 0])
_stats_lock = threading.Lock()

# Sentinel stored for "computed, and the answer is None".
NONE = _NONE = "__none__"
LOCK_TIMEOUT = 10
LOCK_WAIT = 2.0


_backends: dict[str, BaseCache] = {}
_backends_lock = threading.Lock()


def backend(alias: str = "default") -> BaseCache:
    """The process's one cache backend for ``alias``; every cache read and write here goes through it.

    Django's ``caches[alias]`` builds a new backend in every context that has
    none (Django ticket #33625): every ``sync_to_async`` call and every
    request. With django-redis that is a client object graph per call, CPU
    and cyclic garbage that only a full collection frees. The backends
    configured here (django-redis on a shared thread-safe client, local
    memory with its own lock, dummy) are safe to share between threads.
    """
    found = _backends.get(alias)
    if found is None:
        with _backends_lock:
            found = _backends.get(alias)
            if found is None:
                found = _backends[alias] = caches.create_connection(alias)
    return found


def _forget_backends(*, setting: str, **kwargs: Any) -> None:
    # override_settings(CACHES=...) in tests: the next call builds from the new settings.
    if setting == "CACHES":
        with _backends_lock:
            _backends.clear()


setting_changed.connect(_forget_backends)


def caching_enabled() -> bool:
    """False when the default cache stores nothing (ENABLE_CACHING=false, or a benchmark's cache-off run)."""
    return not isinstance(backend(), DummyCache)


def cache_key(family: str, *parts: Any) -> str:
    """The one way to name a cache entry: ``<family>:<part>:<part>…``."""
    return ":".join([family, *(str(p) for p in parts)])


@lru_cache(maxsize=256)
def _requests_counter(family: str, result: str) -> Any:
    # labels() takes a lock and validates every call; there are a few dozen series.
    return CACHE_REQUESTS.labels(family, result)


# Set by lookups_apart(): lookups made inside are tallied here, not as readers' lookups.
_apart: ContextVar[dict[str, list[int]] | None] = ContextVar("perf_cache_apart", default=None)


@contextmanager
def lookups_apart() -> Iterator[dict[str, list[int]]]:
    """Lookups made inside are tallied in the yielded ``{family: [hits, misses]}``, not in the counters.

    For work that fills the cache ahead of readers (chat.warming): its
    lookups are not readers' lookups, so the hit rate should not count them.
    """
    tally: dict[str, list[int]] = {}
    token = _apart.set(tally)
    try:
        yield tally
    finally:
        _apart.reset(token)


def _count(family: str, hits: int, misses: int) -> None:
    apart = _apart.get()
    if apart is not None:
        entry = apart.setdefault(family, [0, 0])
        entry[0] += hits
        entry[1] += misses
        return
    record_cache(hits, misses)
    if hits:
        _requests_counter(family, "hit").inc(hits)
    if misses:
        _requests_counter(family, "miss").inc(misses)
    with _stats_lock:
        entry = _stats[family]
        entry[0] += hits
        entry[1] += misses


def cache_stats() -> dict[str, dict[str, float]]:
    """Hits, misses and hit ratio per family, since the process started."""
    with _stats_lock:
        items = {family: tuple(v) for family, v in _stats.items()}
    return {
        family: {"hits": h, "misses": m, "ratio": (h / (h + m)) if (h + m) else 0.0}
        for family, (h, m) in sorted(items.items())
    }


def cache_stats_reset() -> None:
    with _stats_lock:
        _stats.clear()


# Families of small entries whose every change invalidates them exactly after
# commit (one message, a user's access to a room, a project, …): their TTL
# only bounds memory, so it is longer than CACHE_TTL. The apps that own them
# register them (register_family, from their AppConfig.ready).
# Rendered pages (large) and per-reader unread counts (a new key per message)
# keep CACHE_TTL. A miss marker (None: "no such token / room / project") in
# any family lives CACHE_TTL_MISSING: whoever sends unknown ids should not
# fill the cache with them.
FAMILY_TTLS: dict[str, int] = {}


def register_family(family: str, *, ttl: int) -> None:
    """Give entries of ``family`` their own TTL (apps register their exactly-invalidated families)."""
    FAMILY_TTLS[family] = ttl


def _ttl(ttl: int | None, family: str | None = None, value: Any = True) -> int:
    if ttl is not None:
        return ttl
    if value is None:
        return env.CACHE_TTL_MISSING
    if family in FAMILY_TTLS:
        return FAMILY_TTLS[family]
    return settings.CACHES["default"].get("TIMEOUT", 300)


def cached(family: str, key: str, fill: Callable[[], T], *, ttl: int | None = None, lock: bool = False) -> T:
    """Return the cached value for ``key`` or compute it with ``fill`` and store it.

    With ``lock=True`` (expensive entries) only one caller computes a cold key:
    it takes a short lock with ``cache.add``; the others wait up to
    ``LOCK_WAIT`` seconds for the value and compute it themselves only if the
    holder did not deliver (so a dead Redis or a crashed holder cannot hang them).
    """
    value = backend().get(key)
    if value is not None:
        _count(family, 1, 0)
        return None if value == _NONE else value
    _count(family, 0, 1)
    if lock:
        lock_key = cache_key("lock", key)
        if not backend().add(lock_key, 1, LOCK_TIMEOUT):
            deadline = time.monotonic() + LOCK_WAIT
            while time.monotonic() < deadline:
                time.sleep(0.01)
                value = backend().get(key)
                if value is not None:
                    return None if value == _NONE else value
            return fill()
        try:
            result = fill()
            backend().set(key, _NONE if result is None else result, _ttl(ttl, family, result))
            return result
        finally:
            backend().delete(lock_key)
    result = fill()
    backend().set(key, _NONE if result is None else result, _ttl(ttl, family, result))
    return result


def cached_many(
    family: str, keys: dict[Any, str], fill: Callable[[list[Any]], dict[Any, T]], *, ttl: int | None = None
) -> dict[Any, T]:
    """Batch cache-aside: ``keys`` maps ids to cache keys; ``fill`` computes the missing ids.

    One round trip to read, one to write the misses.
    """
    if not keys:
        return {}
    found = backend().get_many(list(keys.values()))
    result: dict[Any, T] = {}
    missing = []
    for ident, key in keys.items():
        if key in found:
            result[ident] = found[key]
        else:
            missing.append(ident)
    _count(family, len(result), len(missing))
    if missing:
        filled = fill(missing)
        if filled:
            backend().set_many({keys[i]: v for i, v in filled.items()}, _ttl(ttl, family))
        result.update(filled)
    return result


def cached_stamped(family: str, key: str, stamps: list[str], fill: Callable[[], T], *, ttl: int | None = None) -> T:
    """Key-based expiry: ``key``'s value stays valid while every stamp keeps the value it was stored under.

    For results that depend on many entries (a page of history: its messages
    and their authors). Writers invalidate a stamp as they invalidate any key
    (:func:`invalidate_on_commit`); a reader
    that finds a stamp missing puts in a fresh random one with ``add``, so a
    stamp never returns to a value an old entry was stored under. A reader
    that could not learn a stamp (Redis down, or another reader's ``add``
    won) computes without storing. A hit costs one round trip.
    """
    found = backend().get_many([*stamps, key])
    current: list[str | None] = []
    for stamp in stamps:
        value = found.get(stamp)
        if value is None:
            fresh = secrets.token_hex(8)
            # A lost stamp only costs one render of what it covered: keep it as long as entries.
            value = fresh if backend().add(stamp, fresh, env.CACHE_TTL_ENTRIES) else None
        current.append(value)
    entry = found.get(key)
    if entry is not None and None not in current and entry[0] == current:
        _count(family, 1, 0)
        return entry[1]
    _count(family, 0, 1)
    result = fill()
    if None not in current:
        backend().set(key, (current, result), _ttl(ttl, family))
    return result


def get_many_counted(families: dict[str, str]) -> dict[str, Any]:
    """One round trip for several keys (``{key: family}``); counts a hit or miss per key.

    Returns the found values as stored (the ``NONE`` sentinel included).
    """
    found = backend().get_many(list(families))
    _count_lookups(families, found)
    return found


def _count_lookups(families: dict[str, str], found: dict[str, Any]) -> None:
    for key, family in families.items():
        _count(family, 1 if key in found else 0, 0 if key in found else 1)


def store(key: str, value: Any, *, ttl: int | None = None, family: str | None = None) -> None:
    """Write one entry (with ``family``'s TTL); None is stored as the ``NONE`` sentinel."""
    backend().set(key, _NONE if value is None else value, _ttl(ttl, family, value))


def store_many(entries: dict[str, Any], *, ttl: int | None = None, family: str | None = None) -> None:
    """Write several entries in one round trip; None values are stored as the ``NONE`` sentinel."""
    if entries:
        backend().set_many({k: _NONE if v is None else v for k, v in entries.items()}, _ttl(ttl, family))


_request_memo: ContextVar[dict | None] = ContextVar("perf_request_memo", default=None)


def request_memo() -> dict | None:
    """A dict that lives for the current HTTP request (None outside one).

    Selectors memoize permission lookups here so one request computes each
    membership/permission once, however many times views and APIs ask.
    WebSocket consumers get none: a connection lives too long to trust it.
    """
    return _request_memo.get()


def open_request_memo() -> Any:
    """Start the current request's memo (perf.middleware); :func:`close_request_memo` ends it."""
    return _request_memo.set({})


def close_request_memo(token: Any) -> None:
    _request_memo.reset(token)


def invalidate(*keys: str) -> None:
    """Delete exact keys now."""
    if keys:
        backend().delete_many(list(keys))


# Keys Redis looks at per SCAN round trip in invalidate_pattern. Its default,
# 10, made one pattern delete 28,000 round trips (seconds) on a cache of
# 282,000 keys; at 1,000 it is under 300.
PATTERN_SCAN_COUNT = 1000


def invalidate_pattern(pattern: str) -> None:
    """Delete a family of keys (``family:part:*``). SCAN-based on Redis; use for rare writes."""
    delete_pattern = getattr(backend(), "delete_pattern", None)
    if delete_pattern is not None:
        delete_pattern(pattern, itersize=PATTERN_SCAN_COUNT)
    else:
        # Local-memory or dummy cache (the embedded default): no pattern
        # support, and the cache is per process, so clearing it is cheap.
        backend().clear()


def invalidate_on_commit(*keys: str, patterns: Iterable[str] = ()) -> None:
    """Invalidate now and again after the current transaction commits.

    The first delete makes the writer's own later reads in this transaction
    fresh; the second closes the window in which a concurrent reader could
    have refilled the entry from the not-yet-committed (old) rows.
    """
    patterns = tuple(patterns)

    def run() -> None:
        invalidate(*keys)
        for pattern in patterns:
            invalidate_pattern(pattern)

    run()
    transaction.on_commit(run, robust=True)


class CacheErrorCountingHandler(logging.Handler):
    """Counts the cache errors django-redis logs (and ignores)."""

    def emit(self, record: logging.LogRecord) -> None:
        CACHE_ERRORS.inc()
