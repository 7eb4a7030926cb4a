"""The cache's Redis from async code, without a thread hop.

django-redis is synchronous: called on an event loop it would block the loop,
and through ``sync_to_async`` every call costs a thread hop. The WebSocket
send path uses this module instead: one ``redis.asyncio`` client per event
loop on the same Redis database, with django-redis's own key function and
(de)serializer, so an entry written here is read by ``cache.get`` and the
other way round.

:func:`client` is None when the default cache is not django-redis (the
embedded local-memory cache, or caching switched off); callers then use the
synchronous cache, which does no I/O in those cases.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger("perf.cache.redis")

_clients: dict[asyncio.AbstractEventLoop, Any] = {}


def _django_redis_client() -> Any | None:
    inner = getattr(cache, "client", None)
    if inner is None or not hasattr(inner, "encode") or not hasattr(inner, "make_key"):
        return None
    return inner


def backend_client() -> Any | None:
    """django-redis's client of the default cache (its key function and serializer), or None."""
    return _django_redis_client()


def client() -> Any | None:
    """This event loop's async client of the cache's Redis, or None (no django-redis cache)."""
    if _django_redis_client() is None:
        return None
    loop = asyncio.get_running_loop()
    found = _clients.get(loop)
    if found is None:
        import redis.asyncio

        for old in [other for other in _clients if other.is_closed()]:
            del _clients[old]
        options = settings.CACHES["default"].get("OPTIONS", {})
        found = _clients[loop] = redis.asyncio.Redis.from_url(
            settings.CACHES["default"]["LOCATION"],
            socket_connect_timeout=options.get("SOCKET_CONNECT_TIMEOUT", 1),
            socket_timeout=options.get("SOCKET_TIMEOUT", 1),
        )
    return found


async def aclose() -> None:
    """Close this event loop's client, if it has one (shutdown; tests between event loops)."""
    found = _clients.pop(asyncio.get_running_loop(), None)
    if found is not None:
        await found.aclose()


def make_key(key: str) -> str:
    """The Redis key django-redis uses for cache key ``key`` (prefix and version included)."""
    return str(_django_redis_client().make_key(key))


def encode(value: Any) -> Any:
    return _django_redis_client().encode(value)


def decode(raw: Any) -> Any:
    return _django_redis_client().decode(raw)


def failed(what: str) -> None:
    """Log a Redis error where django-redis logs its own (counted as chat_cache_errors_total).

    The caller degrades: a read becomes a miss, a write is skipped, the rate limiter opens.
    """
    logger.warning("async cache %s failed", what, exc_info=True)
