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


class _TurnPipeline:
    """The commands of every caller in one turn of the event loop, sent as one pipeline: one round trip for all.

    With thousands of sockets arriving or leaving at once, each socket's few
    commands cost less than the pipeline around them (a pooled connection, a
    write, a read, a task): gathered, they share one.
    """

    def __init__(self) -> None:
        self.pipe: Any = None
        self.waiting: list[tuple[int, int, asyncio.Future]] = []

    async def run(self, build: Callable[[Any], None]) -> list[Any]:
        if self.pipe is None:
            self.pipe = async_client().pipeline(transaction=False)
            asyncio.get_running_loop().call_soon(self._send)
        start = len(self.pipe)
        build(self.pipe)
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((start, len(self.pipe), future))
        return await future

    def _send(self) -> None:
        pipe, waiting = self.pipe, self.waiting
        self.pipe, self.waiting = None, []
        asyncio.ensure_future(self._execute(pipe, waiting))

    @staticmethod
    async def _execute(pipe: Any, waiting: list[tuple[int, int, asyncio.Future]]) -> None:
        try:
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # noqa: BLE001 - the round trip failed: every caller hears it
            for _, _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for start, end, future in waiting:
            if future.done():
                continue
            mine = results[start:end]
            failed = next((r for r in mine if isinstance(r, Exception)), None)
            if failed is not None:
                future.set_exception(failed)
            else:
                future.set_result(mine)


async def pipelined(build: Callable[[Any], None]) -> list[Any]:
    """Run the commands ``build`` adds to a ``redis.asyncio`` pipeline (no MULTI), in one round trip with those
    of every other caller in this turn of the loop. Returns this caller's results; raises the first error among them."""
    return await loop_resource("redis-turn-pipeline", _TurnPipeline).run(build)
