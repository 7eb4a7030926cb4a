"""The one place that makes Redis clients, and the one registry of per-event-loop resources.

Three ways reach Redis, each from one function here:

* the cache (django-redis, configured in settings): :class:`SharedClientConnectionFactory`
  makes its client once per URL and process;
* :func:`sync_client`: that same client, for code that needs Redis itself
  (active users, the health check); None without a Redis cache;
* :func:`async_client`: one ``redis.asyncio`` client per event loop on
  ``REDIS_URL`` (presence and socket counts), from :func:`loop_resource`.

The channel layer's connections are channels-redis's own.

Async resources live as long as their event loop: a server's loop lives as
long as the server, a test's only as long as the test. :func:`loop_resource`
keeps one of each kind per loop and :func:`aclose_loop_resources` closes all of
this loop's, in the order they were made, backwards.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Awaitable, Callable, TypeVar

from django_redis.pool import ConnectionFactory

from chatsite import env

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SharedClientConnectionFactory(ConnectionFactory):
    """django-redis's ``CONNECTION_FACTORY``: one client per URL per process, as it keeps pools.

    Django keeps cache objects per context (every HTTP request and every
    WebSocket connection), and django-redis builds a ``redis.Redis`` for each:
    CPU at every connect and memory that a socket keeps for its whole life.
    The client holds no per-caller state and is thread-safe, so it is shared.
    """

    _clients: dict[str, Any] = {}
    _lock = threading.Lock()

    def get_connection(self, params: dict[str, Any]) -> Any:
        key = params["url"]
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    client = self._clients[key] = super().get_connection(params)
        return client


def sync_client() -> Any | None:
    """The default cache's Redis client, or None when the cache is not django-redis (embedded mode, caching off)."""
    if not env.REDIS_URL:
        return None
    try:
        from django_redis import get_redis_connection

        return get_redis_connection("default")
    except NotImplementedError:  # not a django-redis cache
        return None


# --- per event loop ---------------------------------------------------------------------

_resources: dict[asyncio.AbstractEventLoop, dict[str, tuple[Any, Callable[[Any], Awaitable[None]] | None]]] = {}


def loop_resource(name: str, make: Callable[[], T], close: Callable[[T], Awaitable[None]] | None = None) -> T:
    """This event loop's resource ``name``, made by ``make()`` on first use; ``close`` ends it at shutdown."""
    loop = asyncio.get_running_loop()
    owned = _resources.get(loop)
    if owned is None:
        for old in [other for other in _resources if other.is_closed()]:
            del _resources[old]
        owned = _resources[loop] = {}
    found = owned.get(name)
    if found is None:
        found = owned[name] = (make(), close)
    return found[0]


def existing_loop_resource(loop: asyncio.AbstractEventLoop, name: str) -> Any | None:
    """``loop``'s resource ``name`` if it has been made, else None; callable from any thread."""
    found = _resources.get(loop, {}).get(name)
    return None if found is None else found[0]


async def aclose_loop_resources() -> None:
    """Close every resource of this event loop, newest first (server shutdown; tests between loops)."""
    owned = _resources.pop(asyncio.get_running_loop(), {})
    for name, (resource, close) in reversed(list(owned.items())):
        if close is None:
            continue
        try:
            await close(resource)
        except Exception:  # noqa: BLE001 - shutting down: the next one still closes
            logger.warning("closing %s failed", name, exc_info=True)


def async_client() -> Any:
    """This event loop's ``redis.asyncio`` client on REDIS_URL.

    A bounded pool that waits for a free connection: a mass disconnect
    (thousands of sockets leaving at once) queues instead of failing.
    """

    def make() -> Any:
        import redis.asyncio as aioredis

        pool = aioredis.BlockingConnectionPool.from_url(
            env.REDIS_URL, max_connections=32, timeout=5, socket_connect_timeout=1, socket_timeout=1
        )
        return aioredis.Redis(connection_pool=pool)

    async def close(client: Any) -> None:
        await client.aclose()

    return loop_resource("redis", make, close)
